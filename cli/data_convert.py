"""`vicmae-data convert / merge`: the commands that write .beton files.

`convert`: a dataset on disk -> one .beton of WebP frame lists; `merge`: .beton files
(shards, or an image and a video dataset) -> one, without re-encoding.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import signal
import warnings
from collections.abc import Iterator
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
from vicmae_data.defaults import MERGE_WORKERS
from vicmae_data.sources.registry import DATASETS, layouts_help
from vicmae_data.write.settings import (
    DEFAULT_ITEM_TIMEOUT,
    DEFAULT_MAX_SAMPLE_BYTES,
    DEFAULT_METHOD,
    DEFAULT_QUALITY,
    DEFAULT_SHORT_SIDE,
)

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
        DEFAULT_SHORT_SIDE,
        "--short-side",
        help="Resize so the short side is this (never upscales).",
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
        DEFAULT_MAX_SAMPLE_BYTES >> 20,
        "--max-sample-mb",
        help="Stop a video's frames at this many MB (warns).",
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
        DEFAULT_ITEM_TIMEOUT,
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
    from vicmae_data.write.convert import convert, parse_fps, parse_shard

    try:
        fps_cap, shard_kn = parse_fps(fps), parse_shard(shard)
    except ValueError as exc:
        fail(str(exc))
    logging.basicConfig(
        level=logging.WARNING, handlers=[RichHandler(console=console)], format="%(message)s"
    )
    view = ConvertProgressView(console, log_every)
    try:
        with _sigterm_raises():  # Slurm's scancel, a time limit: unwind like Ctrl-C
            report = convert(
                dataset, root or Path("data") / dataset, out, split=split, workers=workers,
                short_side=short_side, fps=fps_cap, max_frames=max_frames, quality=quality,
                method=method, max_sample_bytes=int(max_sample_mb * (1 << 20)), shard=shard_kn,
                limit=limit, holdout=holdout, holdout_out=holdout_out, item_timeout=item_timeout,
                overwrite=overwrite, restart=restart, progress=view.update, variant=variant,
            )  # fmt: skip
    except (Exception, _Terminated, KeyboardInterrupt) as exc:
        view.stop()  # the bar goes before the error line
        failure = _failure(exc)
        if failure is None:
            raise  # not a user's mistake: the traceback is what a bug report needs
        fail(*failure)
    finally:
        view.stop()
    if report.up_to_date:
        Console().print(
            f"{shown(report.out)} is already complete ({report.written:,} samples, report "
            f"{shown(report.out)}.report.json): nothing to do; --overwrite converts it again",
            highlight=False,
            soft_wrap=True,
        )
        return
    _summary(report)


def _failure(exc: BaseException) -> tuple[str, int] | None:
    """The one line and exit status for what stopped a conversion, chosen by its type:
    2 refused before any work, 1 failed while working (rerun to resume); None: a bug."""
    from vicmae_data.oserror import os_cause
    from vicmae_data.sources.layouts import LayoutError
    from vicmae_data.write.convert import ConvertError
    from vicmae_data.write.lock import OutputLockedError
    from vicmae_data.write.parts import SettingsChangedError
    from vicmae_data.write.report import OutputExistsError

    if isinstance(exc, _Terminated):
        return "terminated (SIGTERM); rerun the same command to resume", 143
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; rerun the same command to resume", 130
    if isinstance(exc, ConvertError):  # its message says what to do
        return shown(str(exc)), 1
    if isinstance(exc, OSError):  # one the library did not put in words
        where = f" ({shown(str(exc.filename))})" if exc.filename else ""
        return f"{os_cause(exc)}{where}; rerun the same command to resume", 1
    refused = (LayoutError, SettingsChangedError, OutputExistsError, OutputLockedError, ValueError)
    if isinstance(exc, refused):
        return shown(str(exc)), 2
    return None


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`_Terminated`, so the workers are stopped."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    workers: int = typer.Option(
        MERGE_WORKERS, "--workers", "-w", min=1, help="Threads reading the inputs."
    ),
    skip_damaged: bool = typer.Option(
        False,
        "--skip-damaged",
        help="Leave out samples whose frames fail their CRC32 check (listed in the report) "
        "instead of stopping at the first one.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Join .beton files (shards, or an image and a video dataset) without re-encoding.

    An existing OUT is left alone (--overwrite replaces it).

    Example: vicmae-data merge k400-0.beton k400-1.beton --out k400.beton
    """
    from vicmae_data.format.beton import BetonError
    from vicmae_data.write.beton_writer import BetonWriteError
    from vicmae_data.write.lock import OutputLockedError
    from vicmae_data.write.merge import MergeWarning, merge
    from vicmae_data.write.report import OutputExistsError

    for p in inputs:
        open_beton_or_fail(p)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = merge(
                inputs,
                out,
                relabel=relabel.value,
                num_workers=workers,
                skip_damaged=skip_damaged,
                overwrite=overwrite,
            )
        except (
            BetonError,
            BetonWriteError,
            OutputExistsError,
            OutputLockedError,
            OSError,
            ValueError,
        ) as exc:
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
