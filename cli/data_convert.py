"""`vicmae-data convert / merge`: the commands that write .beton files.

`convert`: a dataset on disk -> one .beton of WebP frame lists; `merge`: .beton files
(shards, or an image and a video dataset) -> one, without re-encoding.
"""

from __future__ import annotations

import inspect
import logging
import signal
import warnings
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from vicmae_cli.common import err_console, fail, open_beton_or_fail
from vicmae_cli.display import shown
from vicmae_cli.progress import ConvertProgressView
from vicmae_data.sources.registry import DATASETS, layouts_help
from vicmae_data.write.settings import DEFAULT_METHOD, DEFAULT_QUALITY

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("convert", help=convert_help())(convert_command)
    app.command("merge")(merge_cmd)


def convert_help() -> str:
    """The command's docstring and, from the dataset registry, what each layout's ROOT holds."""
    doc = inspect.cleandoc(convert_command.__doc__ or "")
    layouts = escape(layouts_help())  # "[train/]" would be read as rich markup
    return f"{doc}\n\nDatasets, as they ship (ROOT: --root, default data/DATASET):\n\n{layouts}"


def convert_command(
    dataset: str = typer.Argument(..., help=f"{', '.join(DATASETS)} (layouts above)."),
    out: Path = typer.Option(..., "--out", "-o", help="The .beton file to write."),
    root: Path | None = typer.Option(
        None, "--root", "-r", help="Dataset folder (default: data/DATASET)."
    ),
    split: str = typer.Option(
        "train",
        "--split",
        "-s",
        help="train or val (validation: val); ssv2 also test, which ships without labels.",
    ),
    variant: str | None = typer.Option(
        None,
        "--variant",
        help="Which release of a dataset that ships several (places365: small or large); "
        "default the one on disk.",
    ),
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
    quality: int = typer.Option(DEFAULT_QUALITY, "--quality", "-q", help="WebP quality 0..100."),
    method: int = typer.Option(
        DEFAULT_METHOD, "--method", help="WebP encoder effort 0..6: higher is smaller, slower."
    ),
    max_sample_mb: float = typer.Option(
        512, "--max-sample-mb", help="Stop a video's frames at this many MB (warns)."
    ),
    shard: str = typer.Option("0/1", "--shard", help="Convert only shard K of N, as K/N."),
    limit: int | None = typer.Option(None, "--limit", help="Convert only the first N items."),
    holdout: float = typer.Option(
        0.0,
        "--holdout",
        help="Hold out this fraction of every class (by source path, deterministic) and "
        "write it to --holdout-out instead of --out.",
    ),
    holdout_out: Path | None = typer.Option(
        None, "--holdout-out", help="The .beton for the held-out items (with --holdout)."
    ),
    item_timeout: float = typer.Option(
        600,
        "--item-timeout",
        help="Seconds one item may take; one that takes longer is stopped and skipped.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace OUT if it is already complete (convert it again)."
    ),
    restart: bool = typer.Option(
        False,
        "--restart",
        help="Discard the items in OUT.parts/ that were converted with other settings.",
    ),
    log_every: float = typer.Option(
        30,
        "--log-every",
        help="Seconds between progress lines when stderr is not a terminal (a job's log).",
    ),
) -> None:
    """Convert a dataset into a .beton file of WebP frame lists (resumable).

    Skipped and shortened files are named in OUT.report.json; rerunning the same
    command after an interruption resumes from OUT.parts/. A complete OUT is left
    alone (--overwrite converts it again); other settings than those of the items in
    OUT.parts/ are refused, with the list of what differs (--restart starts over).
    OUT is locked while the job runs: a second job on it is refused.

    Example:
        vicmae-data convert kinetics400 --out k400.beton --workers 16

    A validation split for a dataset that ships none (10% of every class):
        vicmae-data convert folder --root data/mydata/train --out train.beton \\
            --holdout 0.1 --holdout-out val.beton

    Slurm job array (16 shards, then join them):
        #SBATCH --array=0-15
        vicmae-data convert kinetics400 --shard ${SLURM_ARRAY_TASK_ID}/16 \\
            --out k400-${SLURM_ARRAY_TASK_ID}.beton
        vicmae-data merge k400-*.beton --out k400.beton
    """
    from vicmae_data.oserror import os_cause
    from vicmae_data.sources.layouts import LayoutError
    from vicmae_data.write.convert import ConvertError, convert, parse_shard
    from vicmae_data.write.lock import OutputLockedError
    from vicmae_data.write.parts import SettingsChangedError
    from vicmae_data.write.report import OutputExistsError

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
    previous = signal.signal(signal.SIGTERM, _terminate)  # Slurm's scancel, a time limit
    view = ConvertProgressView(console, log_every)
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
            holdout=holdout,
            holdout_out=holdout_out,
            item_timeout=item_timeout,
            overwrite=overwrite,
            restart=restart,
            progress=view.update,
            variant=variant,
        )
    except (
        LayoutError,
        ValueError,
        SettingsChangedError,
        OutputExistsError,
        OutputLockedError,
    ) as exc:
        view.stop()
        fail(shown(str(exc)))
    except ConvertError as exc:
        view.stop()
        fail(shown(str(exc)), code=1)
    except OSError as exc:
        view.stop()
        where = f" ({shown(str(exc.filename))})" if exc.filename else ""
        fail(f"{os_cause(exc)}{where}; rerun the same command to resume", code=1)
    except _Terminated:
        view.stop()
        fail("terminated (SIGTERM); rerun the same command to resume", code=143)
    except KeyboardInterrupt:
        view.stop()
        fail("interrupted; rerun the same command to resume", code=130)
    finally:
        view.stop()
        signal.signal(signal.SIGTERM, previous)
    if report.up_to_date:
        Console().print(
            f"{shown(report.out)} is already complete ({report.written:,} samples, report "
            f"{shown(report.out)}.report.json): nothing to do; --overwrite converts it again",
            highlight=False,
            soft_wrap=True,
        )
        return
    _summary(report)


class _Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C, so the workers are stopped and nothing leaks."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _summary(report) -> None:
    t = report.totals
    table = Table(title=f"converted {shown(report.out)}", show_header=False)
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
        ("classes", str(len(report.classes))),
    ]
    for what, value in rows:
        table.add_row(what, value)
    Console().print(table)
    for entry in report.skipped[:10]:
        console.print(
            f"[yellow]skipped[/] {shown(entry['path'])}: {shown(entry['reason'])}",
            highlight=False,
            soft_wrap=True,
        )
    if len(report.skipped) > 10:
        console.print(f"... and {len(report.skipped) - 10} more", highlight=False, soft_wrap=True)
    for entry in report.partial[:10]:
        console.print(
            f"[yellow]partial[/] {shown(entry['path'])}: {shown(entry['reason'])}",
            highlight=False,
            soft_wrap=True,
        )
    if report.holdout:
        held = shown(report.holdout["holdout"])
        console.print(
            f"held out: {report.holdout['holdout_written']} items in {held} "
            f"(report {held}.report.json)",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"report: {shown(report.out)}.report.json", highlight=False, soft_wrap=True)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class Relabel(StrEnum):
    auto = "auto"
    offset = "offset"
    keep = "keep"


def merge_cmd(
    inputs: list[Path] = typer.Argument(..., help="The .beton files to join, in order."),
    out: Path = typer.Option(..., "--out", "-o", help="The merged .beton."),
    relabel: Relabel = typer.Option(
        Relabel.auto,
        "--relabel",
        help="auto: keep labels of one dataset's shards, offset different datasets; "
        "offset: shift every input past the previous; keep: never change labels.",
    ),
    workers: int = typer.Option(4, "--workers", "-w", min=1, help="Threads reading the inputs."),
    skip_damaged: bool = typer.Option(
        False,
        "--skip-damaged",
        help="Leave out samples whose frames fail their CRC32 check (listed in the report) "
        "instead of stopping at the first one.",
    ),
) -> None:
    """Join .beton files (shards, or an image and a video dataset) without re-encoding.

    Example: vicmae-data merge k400-0.beton k400-1.beton --out k400.beton
    """
    from vicmae_data.format.beton import BetonError
    from vicmae_data.write.beton_writer import BetonWriteError
    from vicmae_data.write.lock import OutputLockedError
    from vicmae_data.write.merge import MergeWarning, merge

    for p in inputs:
        open_beton_or_fail(p)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = merge(
                inputs, out, relabel=relabel.value, num_workers=workers, skip_damaged=skip_damaged
            )
        except (BetonError, BetonWriteError, OutputLockedError, ValueError, OSError) as exc:
            fail(shown(str(exc)))
    for w in caught:
        if issubclass(w.category, MergeWarning):
            err_console.print(
                f"[yellow]warning:[/] {shown(str(w.message))}", highlight=False, soft_wrap=True
            )
    for entry in result.damaged:
        err_console.print(
            f"[yellow]skipped[/] {shown(str(entry['path']))} sample {entry['index']} "
            f"({shown(entry['source'])}): {shown(entry['reason'])}",
            highlight=False,
            soft_wrap=True,
        )
    extra = f" (+ {result.report.name})" if result.report else ""
    Console().print(
        f"wrote {shown(str(result.out))}: {result.plan.total - len(result.damaged):,} samples from "
        f"{len(inputs)} files{extra}",
        soft_wrap=True,
    )
