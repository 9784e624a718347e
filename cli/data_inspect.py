"""`vicmae-data info / verify / preview`: look inside .beton files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vicmae_cli.common import err_console, fail, open_beton_or_fail
from vicmae_cli.display import shown
from vicmae_data.defaults import PREVIEW_MAX_FRAMES, PREVIEW_THUMB_WIDTH, VERIFY_WORKERS

if TYPE_CHECKING:
    from vicmae_data.inspect.info import BetonInfo

# The library modules below import ffcv, which imports torch (seconds): each command
# imports what it needs when it runs, so `vicmae-data --help` and `synth` stay instant.

console = Console()


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _info_table(s: BetonInfo) -> Table:
    from vicmae_data.inspect.info import LIST_CLASSES_UP_TO, describe_frames

    table = Table(title=shown(s.path), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("samples", f"{s.samples:,}  ({s.videos:,} videos, {s.images:,} images)")
    table.add_row("frames per sample", f"{describe_frames(s)}  (min / median / max)")
    table.add_row("frames in all", f"{s.frames_total:,}")
    h, w = s.common_resolution
    table.add_row(
        "resolution (h x w)",
        f"{s.height_min}-{s.height_max} x {s.width_min}-{s.width_max}  (most common {h} x {w})",
    )
    table.add_row("bytes per frame", _size(s.bytes_per_frame))
    padding = 100 * s.padding_bytes / max(s.file_bytes, 1)
    table.add_row(
        "file size",
        f"{_size(s.file_bytes)}: {_size(s.stored_bytes)} stored, {_size(s.table_bytes)} "
        f"tables, {_size(s.padding_bytes)} padding ({padding:.1f}%); page size "
        f"{_size(s.page_size)}",
    )
    if s.source_known:
        estimated = " (estimated)" if s.meta_sampled or s.source_known < s.samples else ""
        table.add_row(
            "source size",
            f"{_size(s.source_bytes)}{estimated}; the .beton is "
            f"{s.file_bytes / max(s.source_bytes, 1):.2f}x the source"
            + (f" ({s.source_known:,} of {s.samples:,} samples)" if estimated else ""),
        )
    else:
        table.add_row("source size", "not recorded (converted before vicmae stored it)")
    if s.damaged:
        table.add_row("damaged samples", f"{s.damaged:,} (`vicmae-data verify` names them)")
    sampled = f"  (from {s.meta_read:,} samples)" if s.meta_sampled else ""
    datasets = ", ".join(f"{shown(k)}: {v:,}" for k, v in s.datasets.items())
    table.add_row("datasets", datasets + sampled)
    table.add_row("partial samples", f"{s.partial:,}{sampled}")

    def named(k: int) -> str:
        name = s.class_names.get(k, "?")
        return shown(f"{s.class_titles[k]} [{name}]" if k in s.class_titles else name)

    if s.num_classes <= LIST_CLASSES_UP_TO:
        classes = "\n".join(f"{k}: {named(k)} ({c:,})" for k, c in s.class_counts.items())
    else:
        top = sorted(s.class_counts.items(), key=lambda kc: -kc[1])[:5]
        classes = "most frequent: " + ", ".join(f"{k}: {named(k)} ({c:,})" for k, c in top)
    used = f" ({s.classes_used:,} used)" if s.classes_used != s.num_classes else ""
    table.add_row("classes", f"{s.num_classes:,}{used}\n{classes}")
    if s.unlabelled:
        table.add_row("unlabelled", f"{s.unlabelled:,} samples (label -1: the split ships none)")
    return table


def info_cmd(
    path: Path = typer.Argument(..., help="The .beton file."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a .beton: samples, classes, frames per sample, resolution, sizes.

    Example: vicmae-data info k400.beton --json
    """
    from vicmae_data.format.beton import BetonError
    from vicmae_data.inspect.info import info

    open_beton_or_fail(path)
    try:
        summary = info(path)
    except BetonError as exc:
        fail(shown(str(exc)))
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        console.print(_info_table(summary))


def verify_cmd(
    path: Path = typer.Argument(..., help="The .beton file."),
    workers: int = typer.Option(
        VERIFY_WORKERS, "--workers", "-w", min=1, help="Processes decoding frames."
    ),
) -> None:
    """Decode every frame of every sample; name the bad ones (exit 1 if any).

    Example: vicmae-data verify k400.beton --workers 8
    """
    from vicmae_data.format.beton import BetonError
    from vicmae_data.inspect.verify import verify

    total = len(open_beton_or_fail(path))
    columns = (
        TextColumn("verify"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("verify", total=total)
        try:
            report = verify(path, workers=workers, progress=lambda k: progress.advance(task, k))
        except BetonError as exc:
            fail(shown(str(exc)))
    if report.ok:
        console.print(
            f"[green]ok[/]: {report.samples:,} samples, {report.frames:,} frames decoded",
            soft_wrap=True,
        )
        return
    title = f"{len(report.bad)} bad samples in {shown(report.path)}"
    table = Table(title=title, title_justify="left")
    for name in ("index", "source", "reason"):
        table.add_column(name)
    for bad in report.bad:
        table.add_row(str(bad.index), shown(bad.source), shown(bad.reason))
    console.print(table)
    raise typer.Exit(1)


def preview_cmd(
    path: Path = typer.Argument(..., help="The .beton file."),
    index: int = typer.Option(0, "--index", "-i", help="Which sample."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG to write."),
    max_frames: int = typer.Option(
        PREVIEW_MAX_FRAMES, "--max-frames", "-n", min=1, help="Frames shown at most."
    ),
    cols: int = typer.Option(0, "--cols", "-c", min=0, help="Columns (0: about square)."),
    thumb_width: int = typer.Option(
        PREVIEW_THUMB_WIDTH, "--thumb-width", min=16, help="Width of each frame."
    ),
) -> None:
    """Write a contact sheet (PNG) of one sample's frames, captioned with frame number and time.

    Example: vicmae-data preview k400.beton --index 2 --out grid.png
    """
    from vicmae_data.format.beton import BetonError
    from vicmae_data.inspect.preview import write_preview

    open_beton_or_fail(path)
    try:
        written = write_preview(
            path, index, out, max_frames=max_frames, cols=cols or None, thumb_width=thumb_width
        )
    except (BetonError, IndexError, OSError) as exc:
        fail(shown(str(exc)))
    console.print(f"wrote {shown(str(written))}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `info`, `verify` and `preview` to `app`."""
    app.command("info")(info_cmd)
    app.command("verify")(verify_cmd)
    app.command("preview")(preview_cmd)
