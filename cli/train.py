"""`vicmae`: pretrain, probe, fine-tune, export and plot.

Every command collects its options, lets the library build the config
(`vicmae.config.cli.job_config`: one parser for the three jobs) and calls one library
function (`vicmae.jobs.pretrain.pretrain`, `vicmae.jobs.linprobe.linprobe`,
`vicmae.jobs.finetune.finetune`, `vicmae.jobs.evaluate.evaluate`, `vicmae.export.export_timm`,
`vicmae.plot.plot_run`).
Errors are one line; a job stopped by SIGTERM/SIGUSR1 saves `last.pt` and exits with status
75 (requeue me).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from vicmae_cli.common import err_console, fail, version_option

app = typer.Typer(
    name="vicmae",
    help="Pretrain ViC-MAE on .beton files, evaluate it, and export the encoder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(
    help="Pretrain, linear-probe or fine-tune (same options and key=value syntax for all).",
    no_args_is_help=True,
    add_completion=False,
)
export_app = typer.Typer(
    help="Export a checkpoint's encoder.", no_args_is_help=True, add_completion=False
)
app.add_typer(train_app, name="train")
app.add_typer(export_app, name="export")

console = Console()

ARGS_HELP = (
    "key=value config overrides, the same dotted keys for every job (e.g. optim.epochs=3 "
    "run.keep=2); after --resume, a run folder or checkpoint to resume."
)


@app.callback()
def main(version: bool = version_option) -> None:
    """Pretrain ViC-MAE on .beton files, evaluate it, and export the encoder."""


def _setup_logging() -> None:
    import os
    import sys

    rank = int(os.environ.get("RANK", "0"))
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False)
        # Without a formatter of its own, basicConfig gives the handler "INFO:vicmae:%s".
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # a scheduler's log file: one plain line per record, never wrapped
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, handlers=[handler], force=True
    )


def _check_betons(items: list[str]) -> None:
    """Fail in one line, before any set-up, on a missing or unreadable .beton."""
    from vicmae.config import parse_beton
    from vicmae_data import BetonError, BetonFile
    from vicmae_data.oserror import not_a_file

    for item in items:
        path, _ = parse_beton(item)
        why = not_a_file(path)
        if why is not None:  # a folder or a FIFO is named as what it is
            fail(f"{path}: {'no such .beton file' if why == 'no such file' else why}")
        try:
            BetonFile(path)
        except BetonError as exc:
            fail(str(exc))


# Options every job shares (typed shortcuts map to the config keys in their help).
CONFIG = typer.Option(
    None, "--config", "-c", help="A YAML file or a built-in name (`vicmae train configs`)."
)
BETON = typer.Option(
    [], "--beton", "-b", help="Training .beton (data.betons); PATH:FRACTION mixes it in."
)
VAL_BETON = typer.Option(None, "--val-beton", help="Validation .beton (data.val_beton).")
OUT = typer.Option(None, "--out", "-o", help="Run folder (run.out).")
RESUME = typer.Option(
    False, "--resume", help="Continue the run in --out (or the run folder / checkpoint given "
    "as the next argument) with its saved config; other settings are refused. It trains to "
    "the end: run.max_steps is not carried over (give it again to stop earlier)."
)  # fmt: skip
OVERWRITE = typer.Option(
    False, "--overwrite", help="Start again in an --out that holds a run (replaces it)."
)
ALLOW = typer.Option(
    False, "--allow-changes", help="With --resume: accept settings that differ from the run's."
)
PRINT = typer.Option(
    False, "--print-config", help="Print the resolved config and exit (reads no data)."
)
EPOCHS = typer.Option(None, "--epochs", help="optim.epochs")
BATCH = typer.Option(None, "--batch-size", help="optim.batch_size (the global batch)")
BLR = typer.Option(None, "--blr", help="optim.base_lr (lr = blr x batch / 256)")
ACCUM = typer.Option(None, "--accum", help="optim.accum (forwards per step per device)")
KEEP = typer.Option(None, "--keep", help="run.keep (epoch checkpoints to keep)")
ARCH = typer.Option(None, "--arch", help="model.arch, e.g. vit_base_patch16")
CHECKPOINT = typer.Option(None, "--checkpoint", help="model.checkpoint (from pretraining)")
ARGS = typer.Argument(None, help=ARGS_HELP, show_default=False)


def _job(
    kind: str,
    run_fn: Callable[..., Any],
    config: str | None,
    args: list[str] | None,
    flags: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    allow_changes: bool,
    print_config: bool,
) -> Any:
    """Build the config (library), check the data, run; every failure one line."""
    from vicmae.config import ConfigError, dump_yaml
    from vicmae.config.cli import job_config, split_resume_target
    from vicmae.engine.checkpoint import CheckpointError
    from vicmae.engine.loop import NonFiniteLossError
    from vicmae.engine.signals import REQUEUE_EXIT_CODE, StoppedBySignal

    try:
        overrides, target = split_resume_target(list(args or []), resume)
        cfg, resume_arg = job_config(
            kind, config, overrides, flags, resume=resume, resume_target=target
        )
    except (ConfigError, CheckpointError) as exc:
        fail(str(exc))
    if print_config:
        typer.echo(dump_yaml(cfg), nl=False)
        raise typer.Exit(0)
    if not cfg.data.betons:
        fail("no .beton given: pass --beton PATH (or data.betons in the config)")
    val = getattr(cfg.data, "val_beton", None)
    _check_betons([*cfg.data.betons, *([val] if val else [])])
    _setup_logging()
    try:
        return run_fn(cfg, resume=resume_arg, overwrite=overwrite, allow_changes=allow_changes)
    except StoppedBySignal as exc:
        err_console.print(str(exc), highlight=False, soft_wrap=True)
        raise typer.Exit(REQUEUE_EXIT_CODE) from None
    except NonFiniteLossError as exc:
        fail(str(exc), code=1)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError, CheckpointError included
        fail(str(exc))


@train_app.command("pretrain")
def pretrain_cmd(
    beton: list[str] = BETON,
    config: str | None = CONFIG,
    out: Path | None = OUT,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    allow_changes: bool = ALLOW,
    print_config: bool = PRINT,
    epochs: int | None = EPOCHS,
    batch_size: int | None = BATCH,
    blr: float | None = BLR,
    accum: int | None = ACCUM,
    keep: int | None = KEEP,
    arch: str | None = ARCH,
    mask_ratio: float | None = typer.Option(None, "--mask-ratio", help="model.mask_ratio"),
    args: list[str] = ARGS,
) -> None:
    """Pretrain ViC-MAE (MAE reconstruction + InfoNCE between two frames of a video).

    One CPU, one GPU, or several under torchrun. Writes config.yaml, last.pt (best.pt,
    epoch_N.pt with --keep), metrics.jsonl and tb/ in the run folder.

    Example: vicmae train pretrain --beton k400.beton --out runs/k400 --epochs 400

    Try it on a sample (2 CPU cores, minutes; the README's sample block): a synthetic
    Kinetics-style dataset, converted, pretrained with the tiny CPU config, probed, exported:

    vicmae-data synth --layout kinetics400 --out data/kinetics400 --videos 64
    vicmae-data convert kinetics400 --split train --out train.beton --short-side 64
    vicmae-data convert kinetics400 --split val --out val.beton --short-side 64
    vicmae train pretrain --config demo_cpu --beton train.beton --out runs/sample \\
        --batch-size 32 --epochs 40
    vicmae train linprobe --beton train.beton --val-beton val.beton \\
        --checkpoint runs/sample/last.pt probe.cached=true
    vicmae export timm --checkpoint runs/sample/last.pt --out vit.pth
    """
    from vicmae.jobs.pretrain import pretrain

    flags = dict(betons=beton, out=out, epochs=epochs, batch_size=batch_size, blr=blr,
                 accum=accum, keep=keep, arch=arch, mask_ratio=mask_ratio)  # fmt: skip
    result = _job("pretrain", pretrain, config, args, flags, resume=resume, overwrite=overwrite,
                  allow_changes=allow_changes, print_config=print_config)  # fmt: skip
    if _main_rank():
        console.print(
            f"done: step {result.step}, checkpoint {result.checkpoint}",
            highlight=False,
            soft_wrap=True,  # one line whatever the path's length (logs, scripts)
        )


def _main_rank() -> bool:
    """Whether this process prints the result: rank 0 under torchrun, or the only process
    (the other ranks write no checkpoint and would print ``checkpoint None``)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _print_eval(name: str, result: dict[str, Any]) -> None:
    if not _main_rank():
        return
    parts = [f"top-1 {result['val_top1']:.2f}%"] if "val_top1" in result else []
    if "val_top5" in result:
        parts.append(f"top-5 {result['val_top5']:.2f}%")
    figures = "  ".join(parts) or "no validation set"
    if "test_top1" in result:  # the video model's K x J test (paper section 4)
        k, j = result["test_views"]
        figures += f"; {k} x {j} views: top-1 {result['test_top1']:.2f}%"
    console.print(f"{name}: {figures}  ({result.get('out', '')})", highlight=False, soft_wrap=True)


@train_app.command("linprobe")
def linprobe_cmd(
    beton: list[str] = BETON,
    val_beton: str | None = VAL_BETON,
    checkpoint: Path | None = CHECKPOINT,
    random_init: bool = typer.Option(
        False, "--random-init", help="model.random_init: the same arch, randomly initialised."
    ),
    config: str | None = CONFIG,
    out: Path | None = OUT,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    allow_changes: bool = ALLOW,
    print_config: bool = PRINT,
    epochs: int | None = EPOCHS,
    batch_size: int | None = BATCH,
    blr: float | None = BLR,
    accum: int | None = ACCUM,
    keep: int | None = KEEP,
    arch: str | None = ARCH,
    args: list[str] = ARGS,
) -> None:
    """Linear probe (paper Table 7): frozen encoder, BatchNorm (no affine) + linear head.

    SGD, base lr 0.1, batch 4096, 90 epochs, a RandomResizedCrop every epoch; validated
    every epoch (best.pt). probe.cached=true: the fast probe on cached features.

    Example: vicmae train linprobe -b train.beton --val-beton val.beton --checkpoint ckpt.pt
    """
    from vicmae.jobs.linprobe import linprobe

    flags = dict(betons=beton, val_beton=val_beton, checkpoint=checkpoint,
                 random_init=random_init, out=out, epochs=epochs, batch_size=batch_size,
                 blr=blr, accum=accum, keep=keep, arch=arch)  # fmt: skip
    result = _job("linprobe", linprobe, config, args, flags, resume=resume, overwrite=overwrite,
                  allow_changes=allow_changes, print_config=print_config)  # fmt: skip
    tag = "random init" if result["random_init"] else str(result["checkpoint"])
    _print_eval(f"linprobe ({tag})", result)


@train_app.command("finetune")
def finetune_cmd(
    beton: list[str] = BETON,
    val_beton: str | None = VAL_BETON,
    checkpoint: Path | None = CHECKPOINT,
    config: str | None = CONFIG,
    out: Path | None = OUT,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    allow_changes: bool = ALLOW,
    print_config: bool = PRINT,
    epochs: int | None = EPOCHS,
    batch_size: int | None = BATCH,
    blr: float | None = BLR,
    accum: int | None = ACCUM,
    keep: int | None = KEEP,
    arch: str | None = ARCH,
    args: list[str] = ARGS,
) -> None:
    """Fine-tune end to end (paper Table 6 with the authors' mixup/cutmix/erasing).

    Layer-wise lr decay, RandAugment, mixup + cutmix, label smoothing, random erasing,
    drop path; validated every epoch (best.pt).

    Example: vicmae train finetune -b train.beton --val-beton val.beton --checkpoint ckpt.pt
    """
    from vicmae.jobs.finetune import finetune

    flags = dict(betons=beton, val_beton=val_beton, checkpoint=checkpoint, out=out,
                 epochs=epochs, batch_size=batch_size, blr=blr, accum=accum, keep=keep,
                 arch=arch)  # fmt: skip
    result = _job("finetune", finetune, config, args, flags, resume=resume, overwrite=overwrite,
                  allow_changes=allow_changes, print_config=print_config)  # fmt: skip
    _print_eval("finetune", result)


@train_app.command("configs")
def configs_cmd() -> None:
    """List the built-in configs (use one with --config NAME).

    Example: vicmae train pretrain --config demo_cpu --print-config
    """
    from rich.table import Table

    from vicmae.config import builtin_configs

    table = Table.grid(padding=(0, 2))  # descriptions wrap under themselves, never cut
    table.add_column(no_wrap=True)
    table.add_column()
    for name, about in builtin_configs().items():
        table.add_row(name, about)
    console.print(table, highlight=False)


@export_app.command("timm")
def export_timm_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A pretraining checkpoint."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the timm state dict."),
    arch: str | None = typer.Option(None, "--arch", help="Override the checkpoint's arch."),
    pool: str = typer.Option(
        "cls", "--pool", help="Feature of the printed timm call: cls (paper) or mean."
    ),
    img_size: int | None = typer.Option(
        None, "--img-size", help="Input size for timm (default: the pretraining size)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line instead of text."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
    with_head: bool = typer.Option(
        False,
        "--with-head",
        help="Add a zero 1000-class classifier head (pretraining trains none), so that timm "
        "loads the file strictly with num_classes=1000.",
    ),
    allow_non_finite: bool = typer.Option(
        False, "--allow-non-finite", help="Write weights that hold NaN or infinity (warns)."
    ),
) -> None:
    """Write the encoder as a timm ViT state dict and print the timm call that loads it.

    The printed timm.create_model(...) line rebuilds the encoder's features (class token by
    default, --pool mean for the patch mean) at the pretraining size or --img-size.

    Example: vicmae export timm --checkpoint runs/k400/last.pt --out vit.pth
    """
    from vicmae.export import POOLS, export_timm, timm_create_args, timm_create_call
    from vicmae_data.oserror import not_a_file

    why = not_a_file(checkpoint)
    if why is not None:  # a folder or a FIFO is named as what it is
        fail(f"{checkpoint}: {'no such checkpoint' if why == 'no such file' else why}")
    if pool not in POOLS:
        fail(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if out.exists() and not force:
        fail(f"{out} exists; pass --force to overwrite it")
    with _warnings_shown():
        try:
            info = export_timm(
                checkpoint,
                out,
                arch=arch,
                allow_non_finite=allow_non_finite,
                head_classes=1000 if with_head else None,
            )
        except (KeyError, ValueError, RuntimeError) as exc:
            fail(f"{checkpoint}: cannot export ({exc})")
    if info["arch"] is None:
        fail(f"{checkpoint}: wrote {out}, but the encoder's size has no name here; pass --arch")
    try:
        args = timm_create_args(info["arch"], out, img_size or info["img_size"], pool)
    except ValueError as exc:
        fail(str(exc))
    # Plain stdout, one line each: rich would wrap long lines at the terminal's width.
    if as_json:
        typer.echo(json.dumps({**info, "timm_create_model": args}))
    else:
        typer.echo(
            f"wrote {out}: {info['arch']} encoder, {info['num_params']:,} parameters, "
            f"pretrained at {info['img_size']}"
        )
        typer.echo(timm_create_call(args))


@app.command("eval")
def eval_cmd(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="A fine-tune (or linear-probe) checkpoint in its run folder."
    ),
    beton: Path = typer.Option(..., "--beton", "-b", help="The labelled .beton to score."),
    clips: int | None = typer.Option(
        None, "--clips", help="Temporal clips per video, K (default: the run's test.clips)."
    ),
    crops: int | None = typer.Option(
        None, "--crops", help="Spatial crops per clip, 1 or 3 (default: the run's test.crops)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Samples per forward."),
    workers: int = typer.Option(2, "--workers", help="Loader threads (data.num_workers)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="JSON file (default: RUN/eval_<beton name>.json)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Score a fine-tuned model on a .beton: K x 3 multi-view testing for video (section 4).

    The softmax of every view of a video is averaged; top-1, top-5 and mean per-class
    accuracy per video are printed and written as JSON. An image model sees the centre
    crop. Under torchrun every rank scores its share.

    Example: vicmae eval --checkpoint runs/ft/last.pt --beton val.beton --clips 7 --crops 3
    """
    from vicmae.config import ConfigError
    from vicmae.engine.checkpoint import CheckpointError
    from vicmae.engine.run_folder import write_json
    from vicmae.jobs.evaluate import evaluate

    if not checkpoint.is_file():
        fail(f"{checkpoint}: no such checkpoint")
    _check_betons([str(beton)])
    out = out or checkpoint.parent / f"eval_{beton.stem}.json"
    if out.exists() and not force:
        fail(f"{out} exists; pass --force to overwrite it (or --out another file)")
    _setup_logging()
    try:
        result = evaluate(checkpoint, beton, clips=clips, crops=crops, batch_size=batch_size,
                          num_workers=workers)  # fmt: skip
    except (ValueError, FileNotFoundError, CheckpointError, ConfigError) as exc:
        fail(str(exc))
    if not _main_rank():
        return
    write_json(out, result)
    k, j = result["views"]
    parts = [f"top-1 {result['test_top1']:.2f}%"]
    if "test_top5" in result:
        parts.append(f"top-5 {result['test_top5']:.2f}%")
    parts.append(f"mean per-class {result['test_mean_class_acc']:.2f}%")
    console.print(
        f"eval: {'  '.join(parts)}  ({k} x {j} views, {result['test_samples']} samples; {out})",
        highlight=False, soft_wrap=True,
    )  # fmt: skip


@contextlib.contextmanager
def _warnings_shown() -> Iterator[None]:
    """The library's warnings (log records) on stderr, one line each, while the block runs."""
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("vicmae")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@app.command("plot")
def plot_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder (holds metrics.jsonl)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for the PNGs."),
) -> None:
    """Draw the curves of a pretraining, linear-probe or fine-tuning run to PNG.

    Losses, throughput and (evaluations) validation accuracy; RUN_DIR/plots/ by default.

    Example: vicmae plot runs/k400
    """
    from vicmae.plot import plot_run

    if not (run_dir / "metrics.jsonl").is_file():
        fail(f"{run_dir}: no metrics.jsonl (is it a run directory?)")
    try:
        paths = plot_run(run_dir, out)
    except ValueError as exc:
        fail(str(exc))
    for p in paths:
        console.print(f"wrote {p}", highlight=False)


if __name__ == "__main__":  # `python -m vicmae_cli.train ...` (what torchrun launches)
    app()
