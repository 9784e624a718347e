"""`vicmae-data convert`: a dataset on disk -> one .beton of WebP frame lists."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from vicmae_cli.common import fail
from vicmae_data.write.transcode import DEFAULT_METHOD

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("convert")(convert_command)


def convert_command(
    dataset: str = typer.Argument(
        ..., help="kinetics400, kinetics600, kinetics700, mit, imagenet or folder."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The .beton file to write."),
    root: Path | None = typer.Option(
        None, "--root", "-r", help="Dataset folder (default: data/DATASET)."
    ),
    split: str = typer.Option("train", "--split", "-s", help="train or val."),
    workers: int | None = typer.Option(
        None, "--workers", "-w", help="Worker processes (default: the CPU cores available)."
    ),
    short_side: int = typer.Option(
        256, "--short-side", help="Resize so the short side is this (never upscales)."
    ),
    fps: str = typer.Option("native", "--fps", help="'native', or at most F frames/s."),
    max_frames: int | None = typer.Option(
        None, "--max-frames", help="Keep at most N frames per video (the rest is dropped)."
    ),
    quality: int = typer.Option(90, "--quality", "-q", help="WebP quality 0..100."),
    method: int = typer.Option(
        DEFAULT_METHOD, "--method", help="WebP encoder effort 0..6: higher is smaller, slower."
    ),
    max_sample_mb: float = typer.Option(
        512, "--max-sample-mb", help="Stop a video's frames at this many MB (warns)."
    ),
    shard: str = typer.Option("0/1", "--shard", help="Convert only shard K of N, as K/N."),
    limit: int | None = typer.Option(None, "--limit", help="Convert only the first N items."),
) -> None:
    """Convert a dataset into a .beton file of WebP frame lists (resumable).

    Skipped and shortened files are named in OUT.report.json; rerunning the same
    command after an interruption resumes from OUT.parts/.

    Example:
        vicmae-data convert kinetics400 --out k400.beton --workers 16

    Slurm job array (16 shards, then join them):
        #SBATCH --array=0-15
        vicmae-data convert kinetics400 --shard ${SLURM_ARRAY_TASK_ID}/16 \\
            --out k400-${SLURM_ARRAY_TASK_ID}.beton
        vicmae-data merge k400-*.beton --out k400.beton
    """
    from vicmae_data.sources.layouts import LayoutError
    from vicmae_data.write.convert import ConvertError, convert, parse_shard

    try:
        fps_cap = None if fps.strip().lower() == "native" else float(fps)
        shard_kn = parse_shard(shard)
    except ValueError as exc:
        fail(
            str(exc) if "shard" in str(exc) else f"--fps must be 'native' or a number, got {fps!r}"
        )
    if root is None:
        root = Path("data") / dataset
    logging.basicConfig(
        level=logging.WARNING, handlers=[RichHandler(console=console)], format="%(message)s"
    )
    with _ProgressView() as view:
        try:
            report = convert(
                dataset,
                root,
                out,
                split=split,
                workers=workers,
                short_side=short_side,
                fps=fps_cap,
                max_frames=max_frames,
                quality=quality,
                method=method,
                max_sample_bytes=int(max_sample_mb * (1 << 20)),
                shard=shard_kn,
                limit=limit,
                progress=view.update,
            )
        except LayoutError as exc:
            view.stop()
            fail(str(exc))
        except ConvertError as exc:
            view.stop()
            fail(str(exc), code=1)
        except ValueError as exc:
            view.stop()
            fail(str(exc))
        except KeyboardInterrupt:
            view.stop()
            fail("interrupted; rerun the same command to resume", code=130)
    _summary(report)


class _ProgressView:
    """A rich progress bar fed by the library's progress callback."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rates]}"),
            TextColumn("[yellow]{task.fields[skipped]} skipped"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task("convert", total=None, rates="", skipped=0)
        self.base: tuple[float, int, int] | None = None
        self.phase = "convert"

    def __enter__(self) -> _ProgressView:
        return self  # the bar starts with the first update: errors before it print alone

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def stop(self) -> None:
        self.bar.stop()

    def update(self, p) -> None:
        # Rates count only this run's work, not the items resumed from the cache; the
        # write phase counts samples written, from 0 again.
        if p.phase != self.phase:
            self.phase, self.base = p.phase, None
        if self.base is None:
            self.base = (p.elapsed, p.done, p.frames)
            self.bar.start()
        seconds = max(p.elapsed - self.base[0], 1e-9)
        items_s = (p.done - self.base[1]) / seconds
        frames_s = (p.frames - self.base[2]) / seconds
        rates = f"{items_s:.1f} items/s {frames_s:.0f} frames/s"
        if p.phase == "write":
            rates = f"{items_s:.1f} samples/s"
        self.bar.update(
            self.task,
            description="write .beton" if p.phase == "write" else "convert",
            total=p.total,
            completed=p.done,
            skipped=p.skipped,
            rates=rates,
        )


def _summary(report) -> None:
    t = report.totals
    table = Table(title=f"converted {report.out}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("items", f"{t['written']} written of {t['items']}"),
        ("frames", str(t["frames"])),
        ("bytes", _size(t["bytes"])),
        ("bytes/frame", f"{t['bytes_per_frame']:.0f}"),
        ("time", f"{t['seconds']:.1f} s"),
        ("skipped", str(t["skipped"])),
        ("partial", str(t["partial"])),
        ("capped", str(t["capped"])),
        ("missing", str(t["missing"])),
        ("resumed", str(t["resumed"])),
    ]
    for what, value in rows:
        table.add_row(what, value)
    Console().print(table)
    for entry in report.skipped[:10]:
        console.print(
            f"[yellow]skipped[/] {entry['path']}: {entry['reason']}",
            highlight=False,
            soft_wrap=True,
        )
    if len(report.skipped) > 10:
        console.print(f"... and {len(report.skipped) - 10} more", highlight=False, soft_wrap=True)
    for entry in report.partial[:10]:
        console.print(
            f"[yellow]partial[/] {entry['path']}: {entry['reason']}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"report: {report.out}.report.json", highlight=False, soft_wrap=True)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
