"""`vicmae`: pretrain, probe, fine-tune, export and plot.

Every command validates its input, builds a frozen config and calls one library function
(`vicmae.trainer.pretrain`, `vicmae.linprobe.linprobe`, `vicmae.finetune.finetune`,
`vicmae.export.export_timm`, `vicmae.plot.plot_run`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler

from vicmae_cli.common import fail, version_option

app = typer.Typer(
    name="vicmae",
    help="Pretrain ViC-MAE on .beton files, evaluate it, and export the encoder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(
    help="Pretrain, linear-probe or fine-tune.", no_args_is_help=True, add_completion=False
)
export_app = typer.Typer(
    help="Export a checkpoint's encoder.", no_args_is_help=True, add_completion=False
)
app.add_typer(train_app, name="train")
app.add_typer(export_app, name="export")

console = Console()

BETON_HELP = "A .beton file; PATH:FRACTION mixes it in at that fraction (repeatable)."
OVERRIDES_HELP = "Config overrides key=value, e.g. optim.base_lr=1e-4 model.arch=vit_small_patch16"


@app.callback()
def main(version: bool = version_option) -> None:
    """Pretrain ViC-MAE on .beton files, evaluate it, and export the encoder."""


def _setup_logging() -> None:
    import os
    import sys

    rank = int(os.environ.get("RANK", "0"))
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False)
    else:  # logs to a file: one plain line per record, never wrapped
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, handlers=[handler], force=True
    )


def _check_betons(betons: list[str]) -> None:
    """Fail in one line, before any set-up, on a missing or unreadable .beton."""
    from vicmae_data.format.beton import BetonError, BetonFile

    for item in betons:
        path, _, frac = item.rpartition(":")
        candidate = path if path and _is_number(frac) else item
        if not Path(candidate).is_file():
            fail(f"{candidate}: no such .beton file")
        try:
            BetonFile(candidate)
        except BetonError as exc:
            fail(str(exc))


def _eval_overrides(
    beton: str, val_beton: str, checkpoint: Path | None, out: Path | None
) -> list[str]:
    """The linprobe/finetune options as config overrides (after checking the checkpoint)."""
    if checkpoint is not None and not checkpoint.is_file():
        fail(f"{checkpoint}: no such checkpoint")
    extra = [f"train_beton={json.dumps(beton)}", f"val_beton={json.dumps(val_beton)}"]
    if checkpoint is not None:
        extra.append(f"checkpoint={json.dumps(str(checkpoint))}")
    if out is not None:
        extra.append(f"out={json.dumps(str(out))}")
    return extra


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _load(cls, config: Path | None, overrides: list[str], base: dict | None = None):
    from vicmae.config import ConfigError, load_config

    try:
        return load_config(config, overrides, cls=cls, base=base)
    except ConfigError as exc:
        fail(str(exc))


@train_app.command("pretrain")
def pretrain_cmd(
    beton: list[str] = typer.Option([], "--beton", "-b", help=BETON_HELP),
    config: Path | None = typer.Option(None, "--config", "-c", help="A YAML config file."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (run.out)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoint.pt."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
) -> None:
    """Pretrain ViC-MAE (MAE reconstruction + InfoNCE between two frames of a video).

    Runs on one CPU, one GPU, or several under torchrun. Writes config.yaml,
    checkpoint.pt, metrics.jsonl and tb/ in the run directory.

    Example: vicmae train pretrain --beton k400.beton --out runs/k400 optim.epochs=400
    """
    from vicmae.config import ConfigError, TrainConfig, read_yaml
    from vicmae.trainer import NonFiniteLossError, pretrain

    overrides = list(overrides or [])
    if beton:
        _check_betons(beton)
        overrides.append("data.betons=" + json.dumps(list(beton)))
    if out is not None:
        overrides.append(f"run.out={json.dumps(str(out))}")
    base = None
    if resume and config is None:
        # A resumed run keeps the config it started with unless told otherwise.
        run_dir = out or Path(TrainConfig().run.out)
        if (run_dir / "config.yaml").is_file():
            try:
                base = read_yaml(run_dir / "config.yaml")
            except ConfigError as exc:
                fail(str(exc))
    cfg = _load(TrainConfig, config, overrides, base)
    if not cfg.data.betons:
        fail("no .beton given: pass --beton PATH (or data.betons in the config)")
    _check_betons(list(cfg.data.betons))
    _setup_logging()
    try:
        result = pretrain(cfg, resume=resume)
    except NonFiniteLossError as exc:
        fail(str(exc), code=1)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(f"done: step {result.step}, checkpoint {result.checkpoint}")


@train_app.command("linprobe")
def linprobe_cmd(
    beton: str = typer.Option(..., "--beton", "-b", help="Training .beton (labels used)."),
    val_beton: str = typer.Option(..., "--val-beton", help="Validation .beton."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A pretraining checkpoint."),
    random_init: bool = typer.Option(
        False, "--random-init", help="Probe a randomly initialised encoder of the same arch."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="A YAML config file."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write the JSON result."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
) -> None:
    """Linear probe: frozen encoder, BatchNorm (no affine) + linear head, SGD (paper Table 7).

    Prints top-1/top-5 on the validation set and writes them as JSON.

    Example: vicmae train linprobe -b train.beton --val-beton val.beton --checkpoint ckpt.pt
    """
    from vicmae.config import ConfigError
    from vicmae.linprobe import LinprobeConfig, linprobe

    overrides = list(overrides or [])
    _check_betons([beton, val_beton])
    if checkpoint is None and not random_init:
        fail("pass --checkpoint CKPT (or --random-init with model.arch=...)")
    overrides += _eval_overrides(beton, val_beton, checkpoint, out)
    overrides.append(f"random_init={str(random_init).lower()}")
    cfg = _load(LinprobeConfig, config, overrides)
    _setup_logging()
    try:
        result = linprobe(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    tag = "random init" if random_init else str(checkpoint)
    console.print(
        f"linprobe ({tag}): top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%",
        highlight=False,
    )


@train_app.command("finetune")
def finetune_cmd(
    beton: str = typer.Option(..., "--beton", "-b", help="Training .beton."),
    val_beton: str = typer.Option(..., "--val-beton", help="Validation .beton."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A pretraining checkpoint."),
    config: Path | None = typer.Option(None, "--config", "-c", help="A YAML config file."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
) -> None:
    """Fine-tune end to end: layer-wise lr decay, label smoothing, mixup, drop path (Table 6).

    Example: vicmae train finetune -b train.beton --val-beton val.beton --checkpoint ckpt.pt
    """
    from vicmae.config import ConfigError
    from vicmae.finetune import FinetuneConfig, finetune

    overrides = list(overrides or [])
    _check_betons([beton, val_beton])
    overrides += _eval_overrides(beton, val_beton, checkpoint, out)
    cfg = _load(FinetuneConfig, config, overrides)
    _setup_logging()
    try:
        result = finetune(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(
        f"finetune: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%", highlight=False
    )


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
) -> None:
    """Write the encoder as a timm ViT state dict and print the timm call that loads it.

    The printed timm.create_model(...) line rebuilds the encoder's features (class token by
    default, --pool mean for the patch mean) at the pretraining size or --img-size.

    Example: vicmae export timm --checkpoint runs/k400/checkpoint.pt --out vit.pth
    """
    from vicmae.export import POOLS, export_timm, timm_create_args, timm_create_call

    if not checkpoint.is_file():
        fail(f"{checkpoint}: no such checkpoint")
    if pool not in POOLS:
        fail(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if out.exists() and not force:
        fail(f"{out} exists; pass --force to overwrite it")
    try:
        info = export_timm(checkpoint, out, arch=arch)
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


@app.command("plot")
def plot_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (holds metrics.jsonl)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for the PNGs."),
) -> None:
    """Draw loss and throughput curves of a run to PNG (RUN_DIR/plots/ by default).

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
