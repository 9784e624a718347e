"""The three jobs' configurations: frozen dataclasses with sourced defaults.

Every job has the same sections and keys where they mean the same thing (``optim.epochs``,
``optim.batch_size``, ``data.betons``, ``run.out``...), so one dotted ``key=value`` syntax
and one set of typed flags serve pretraining, linear probing and fine-tuning:

- :class:`TrainConfig` (``vicmae train pretrain``): ``model`` (:class:`ModelConfig`),
  ``optim``, ``loss``, ``data``, ``run``; defaults from the paper's Table 5.
- :class:`LinprobeConfig`: ``model`` (:class:`EvalModelConfig`), ``optim`` (Table 7),
  ``probe``, ``data``, ``run``.
- :class:`FinetuneConfig`: ``model`` (:class:`FinetuneModelConfig`), ``optim`` (Table 6),
  ``augment`` (Table 6 and the authors' ``image_finetune.py``), ``data``, ``run``.

A config is resolved once at start (YAML, then overrides, then derived values), checked
(settings that cannot work are refused before any work), and never mutated; its dict form
is printed at start and saved inside every checkpoint.

Example::

    cfg = load_config("demo_cpu", ["optim.base_lr=1e-4", "model.arch=vit_small_patch16"])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from vicmae.config_io import (
    ConfigError,
    config_diff,
    dump_yaml,
    from_dict,
    merge_overrides,
    read_yaml,
    to_dict,
)
from vicmae.model.vicmae import ModelConfig
from vicmae.model.vit import VIT_ARCHS

T = TypeVar("T")

# ----------------------------------------------------------------------------- shared sections


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, batch and schedule. Defaults: pretraining, paper Table 5."""

    name: Literal["adamw", "sgd"] = "adamw"  # Table 5
    base_lr: float = 1.5e-4  # Table 5; lr = base_lr x batch_size / 256 (appendix A)
    # Table 5. Not on biases and 1-D weights; on the tokens: timm's param_groups_weight_decay
    # as the authors' pretrain.py calls it (the paper is silent on which tensors decay).
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)  # Table 5 (AdamW)
    momentum: float = 0.9  # SGD only
    # The global batch of one optimiser step: micro_batch x accum x world size.
    batch_size: int = 4096  # Table 5
    # Samples per device per forward. None: derived from accum, else the largest divisor of
    # the per-device batch that fits (measured on CUDA; at most 32 on a CPU).
    micro_batch: int | None = None
    accum: int | None = None  # forwards per optimiser step per device (None: from above)
    epochs: int = 800  # Table 5
    warmup_epochs: float = 40.0  # Table 5
    min_lr: float = 0.0  # the cosine's floor
    clip_grad: float | None = None  # appendix A: "we do not perform ... gradient clipping"
    layer_decay: float | None = None  # layer-wise lr decay (fine-tuning only)
    fused: bool = True  # fused AdamW kernel on CUDA


@dataclass(frozen=True)
class LoaderConfig:
    """What the loader reads and how it samples (``vicmae_data.make_loader``)."""

    # Training .beton paths; "in1k.beton:0.3" mixes a file in at that fraction of samples.
    betons: tuple[str, ...] = ()
    # The model's input size. None: model.img_size (pretraining), else the checkpoint's.
    resolution: int | None = None
    sampling: Literal["distant", "continuous"] = "distant"
    delta: int = 8  # continuous sampling: second frame within (i, i + delta]
    num_workers: int = 2
    # How the loader reads the file (vicmae_data/load/memory.py): "mmap-bounded" reads only
    # the touched bytes and keeps resident memory at about a batch, for files of any size.
    memory: Literal["mmap-bounded", "os_cache", "process_cache"] = "mmap-bounded"
    # Random resized crop: area fraction of the frame, for videos and for images (aspect
    # (3/4, 4/3) both). Paper Table 5: crop [0.5, 1] (section 4 states it for video frames
    # and no other range for images). Authors' code: ffcv's default (0.08, 1) for every row.
    video_scale: tuple[float, float] = (0.5, 1.0)
    image_scale: tuple[float, float] = (0.5, 1.0)


@dataclass(frozen=True)
class DataConfig(LoaderConfig):
    """Pretraining data: the loader's settings and the two views' colour augmentation."""

    image_augment: bool = True  # strong colour set (vicmae_data/load/augment.py); False: none
    # Paper: the same aug() on both views (Algorithm 1). Authors' pretrain.py: blur always
    # on view 1, solarisation 0.2 on view 2 only ("asymmetric").
    augment_views: Literal["symmetric", "asymmetric"] = "symmetric"
    # Paper section 4: video frames get crops and flips only. Authors' code: one pipeline
    # for every row, video frames included ("all").
    augment_rows: Literal["images", "all"] = "images"


@dataclass(frozen=True)
class EvalDataConfig(LoaderConfig):
    """Evaluation data: training and validation files, RandomResizedCrop for training."""

    val_beton: str | None = None  # validated after every epoch; None: no validation
    # torchvision's RandomResizedCrop default, which MAE's main_linprobe.py and timm's
    # create_transform (MAE's and the authors' fine-tuning transform) use.
    video_scale: tuple[float, float] = (0.08, 1.0)
    image_scale: tuple[float, float] = (0.08, 1.0)


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run executes, and what it writes."""

    out: str | None = None  # run folder; None: runs/<job> (beside the checkpoint for eval)
    seed: int = 0
    device: str = "auto"  # auto: cuda when available, else cpu
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on CUDA, else fp32
    compile: bool = False  # torch.compile the model
    ckpt_every_steps: int = 1000  # last.pt; also at every epoch end and at the end
    ckpt_every_minutes: float = 30.0  # last.pt by wall time too (0: off)
    keep: int = 0  # epoch checkpoints kept (epoch_NNNN.pt, newest); 0: only last.pt/best.pt
    log_every_steps: int = 10  # also how soon a stop signal is acted on
    progress: bool = True  # progress bar on a terminal (plain lines otherwise)
    max_steps: int | None = None  # stop early (smoke runs, benchmarks); schedules unchanged
    wandb: bool = False  # also log to Weights & Biases (needs `pip install wandb`)
    wandb_project: str = "vicmae"


@dataclass(frozen=True)
class PretrainRunConfig(RunConfig):
    """Pretraining's run settings."""

    # SyncBatchNorm in the projector on several GPUs. Paper: silent; authors' code: plain
    # BatchNorm1d (per-GPU statistics), so off.
    sync_bn: bool = False


# Keys a resumed run may change freely: where and how it runs, not what it computes.
RUN_CONTROL_KEYS = (
    "run.out", "run.device", "run.compile", "run.ckpt_every_steps", "run.ckpt_every_minutes",
    "run.keep", "run.log_every_steps", "run.progress", "run.max_steps", "run.wandb",
    "run.wandb_project", "data.num_workers", "data.memory",
)  # fmt: skip

# ----------------------------------------------------------------------------- pretraining


@dataclass(frozen=True)
class LossConfig:
    """How the two losses are mixed: loss = recon_weight x recon + lambda(epoch) x contrastive."""

    # The authors' code used 0.97 x reconstruction + 0.03 x contrastive from the start.
    recon_weight: float = 1.0
    contrastive_weight: float = 0.025  # lambda once switched on (Table 5)
    contrastive_start_epoch: float = 200.0  # lambda is 0 before this epoch (Table 5)


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``vicmae train pretrain`` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: PretrainRunConfig = field(default_factory=PretrainRunConfig)


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalModelConfig:
    """The encoder an evaluation starts from."""

    checkpoint: str | None = None  # a pretraining checkpoint (last.pt, best.pt, epoch_N.pt)
    random_init: bool = False  # the checkpoint's architecture, randomly initialised
    arch: str | None = None  # without a checkpoint: the architecture to initialise
    # Appendix A: "We use the class token ... similar results are obtained ... using
    # average pooling"; the authors' image_finetune.py defaults to the class token too.
    pool: Literal["cls", "mean"] = "cls"


@dataclass(frozen=True)
class LinprobeOptimConfig(OptimConfig):
    """Linear probe optimiser: paper Table 7."""

    name: Literal["adamw", "sgd"] = "sgd"  # Table 7
    base_lr: float = 0.1  # Table 7 (lr = 0.1 x batch / 256)
    weight_decay: float = 0.0  # Table 7
    momentum: float = 0.9  # Table 7
    batch_size: int = 4096  # Table 7
    epochs: int = 90  # Table 7
    warmup_epochs: float = 10.0  # Table 7


@dataclass(frozen=True)
class ProbeConfig:
    """How the probe sees the data."""

    # False (Table 7): RandomResizedCrop drawn every epoch through the real loader, the
    # frozen encoder run every step. True: features of the centre view computed once and
    # the head trained on them (epochs x cheaper, no augmentation; one process only).
    cached: bool = False
    extract_batch: int = 64  # samples per encoder forward when caching features


@dataclass(frozen=True)
class LinprobeConfig:
    """Everything ``vicmae train linprobe`` needs."""

    model: EvalModelConfig = field(default_factory=EvalModelConfig)
    optim: LinprobeOptimConfig = field(default_factory=LinprobeOptimConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass(frozen=True)
class FinetuneModelConfig(EvalModelConfig):
    """The encoder fine-tuned, and its head."""

    drop_path: float = 0.1  # Table 6: 0.1 for ViT-B, 0.2 for ViT-L
    # Position embeddings learned while fine-tuning (the authors' models_vit.py is timm's
    # VisionTransformer, whose pos_embed is a parameter), starting from the sin-cos table.
    learn_pos_embed: bool = True


@dataclass(frozen=True)
class FinetuneOptimConfig(OptimConfig):
    """Fine-tuning optimiser: paper Table 6, ViT-B on ImageNet-1k.

    Table 6 gives base lr 3e-3 (1.2e-2 at batch 1024 by the scaling rule); the authors'
    scripts/finetune_imagenet_vicmae_base.sh passes --blr 5e-4 (2e-3 at batch 1024).
    """

    name: Literal["adamw", "sgd"] = "adamw"  # Table 6
    base_lr: float = 3e-3  # Table 6, IN1K ViT-B (K400: 1.6e-3); authors' script: 5e-4
    weight_decay: float = 0.05  # Table 6
    betas: tuple[float, float] = (0.9, 0.999)  # Table 6
    batch_size: int = 1024  # Table 6 (ViT-L: 768)
    epochs: int = 100  # Table 6, IN1K ViT-B (K400: 150)
    warmup_epochs: float = 5.0  # Table 6
    min_lr: float = 1e-6  # authors' image_finetune.py --min_lr default
    layer_decay: float | None = 0.65  # Table 6: 0.65 for ViT-B, 0.75 for ViT-L


@dataclass(frozen=True)
class AugmentConfig:
    """Fine-tuning augmentation and regularisation (timm's pieces, as the authors used)."""

    # timm rand_augment_transform name; Table 6 "RandAug (9, 0.5)"; the exact string is
    # the authors' image_finetune.py --aa default. "" turns RandAugment off.
    randaugment: str = "rand-m9-mstd0.5-inc1"
    mixup: float = 0.8  # Table 6; mixup alpha, 0 off
    cutmix: float = 1.0  # authors' script --cutmix 1.0 (Table 6 lists none)
    mixup_prob: float = 1.0  # authors' image_finetune.py default
    switch_prob: float = 0.5  # mixup <-> cutmix switching, authors' image_finetune.py default
    label_smoothing: float = 0.1  # Table 6
    reprob: float = 0.25  # random erasing probability, authors' script --reprob 0.25
    remode: Literal["pixel", "rand", "const"] = "pixel"  # authors' image_finetune.py default
    # >1: average softmax over K passes of the validation set (pass 0 the centre view,
    # passes k > 0 the training crops drawn for "epoch" k), matched by sample index.
    test_views: int = 1


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything ``vicmae train finetune`` needs."""

    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    run: RunConfig = field(default_factory=RunConfig)


JobConfig = TrainConfig | LinprobeConfig | FinetuneConfig
JOB_CONFIGS: dict[str, type] = {
    "pretrain": TrainConfig,
    "linprobe": LinprobeConfig,
    "finetune": FinetuneConfig,
}

# ----------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    cls: type[T] = TrainConfig,  # type: ignore[assignment]
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults <- ``base`` dict <- YAML file ``path`` <- ``overrides``, checked and resolved."""
    data: dict[str, Any] = merge_overrides(base or {}, [])
    if path is not None:
        data = _merge(data, read_yaml(path))
    data = merge_overrides(data, list(overrides))
    return resolve(from_dict(cls, data))


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve(cfg: T) -> T:
    """Derived values filled in once, then every setting checked (ConfigError if it cannot work).

    Pretraining: the data resolution and the model's input size are one value.
    """
    if isinstance(cfg, TrainConfig):
        res = cfg.model.img_size if cfg.data.resolution is None else cfg.data.resolution
        check_resolution(res, cfg.model.arch, "data.resolution")
        try:
            model = replace(cfg.model, img_size=res)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None
        cfg = replace(cfg, data=replace(cfg.data, resolution=res), model=model)
    if isinstance(cfg, LinprobeConfig | FinetuneConfig):
        if cfg.model.arch is not None and cfg.model.arch not in VIT_ARCHS:
            raise ConfigError(f"model.arch: unknown {cfg.model.arch!r}; one of {sorted(VIT_ARCHS)}")
        if cfg.data.resolution is not None and cfg.model.arch is not None:
            check_resolution(cfg.data.resolution, cfg.model.arch, "data.resolution")
    if cfg.optim.layer_decay is not None and not isinstance(cfg, FinetuneConfig):
        raise ConfigError("optim.layer_decay applies to fine-tuning only; leave it null here")
    if cfg.run.out is None:
        cfg = replace(cfg, run=replace(cfg.run, out=default_out(cfg)))
    _check_common(cfg)
    return cfg


def default_out(cfg: Any) -> str:
    """``runs/pretrain``; an evaluation's folder sits beside the checkpoint it evaluates."""
    if isinstance(cfg, TrainConfig):
        return os.path.join("runs", "pretrain")
    job = "linprobe" if isinstance(cfg, LinprobeConfig) else "finetune"
    if cfg.model.random_init:
        job += "_random_init"
    if cfg.model.checkpoint:
        return os.path.join(os.path.dirname(cfg.model.checkpoint) or ".", job)
    return os.path.join("runs", job)


def patch_size(arch: str) -> int:
    """The patch side of an architecture name (ConfigError naming the choices otherwise)."""
    if arch not in VIT_ARCHS:
        raise ConfigError(f"model.arch: unknown {arch!r}; one of {sorted(VIT_ARCHS)}")
    return VIT_ARCHS[arch].patch_size


def check_resolution(res: int, arch: str, key: str) -> None:
    """Refuse a resolution that is not a positive multiple of the architecture's patch."""
    p = patch_size(arch)
    if res <= 0 or res % p:
        lo = max(p, res // p * p)
        hint = f"use {lo} or {lo + p}" if res > 0 else f"use a multiple of {p}, e.g. {14 * p}"
        raise ConfigError(
            f"{key}={res} is not a positive multiple of the patch size {p} of {arch}; {hint}"
        )


def _check_common(cfg: Any) -> None:
    o, r, d = cfg.optim, cfg.run, cfg.data
    for key, value in (("optim.batch_size", o.batch_size), ("optim.epochs", o.epochs)):
        if value <= 0:
            raise ConfigError(f"{key}={value} must be positive")
    for key, value in (("optim.micro_batch", o.micro_batch), ("optim.accum", o.accum)):
        if value is not None and value <= 0:
            raise ConfigError(f"{key}={value} must be positive")
    if o.base_lr < 0 or o.weight_decay < 0:
        raise ConfigError("optim.base_lr and optim.weight_decay must not be negative")
    if o.warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs={o.warmup_epochs} must not be negative")
    if o.layer_decay is not None and not 0 < o.layer_decay <= 1:
        raise ConfigError(f"optim.layer_decay={o.layer_decay} must be in (0, 1]")
    if r.ckpt_every_steps <= 0 or r.log_every_steps <= 0:
        raise ConfigError("run.ckpt_every_steps and run.log_every_steps must be positive")
    if r.keep < 0 or r.ckpt_every_minutes < 0:
        raise ConfigError("run.keep and run.ckpt_every_minutes must not be negative")
    if r.max_steps is not None and r.max_steps <= 0:
        raise ConfigError(f"run.max_steps={r.max_steps} must be positive (or null)")
    if d.num_workers < 1:
        raise ConfigError(f"data.num_workers={d.num_workers} must be at least 1")
    if d.resolution is not None and d.resolution <= 0:
        raise ConfigError(f"data.resolution={d.resolution} must be positive")
    if r.device not in ("auto", "cpu", "cuda") and not r.device.startswith("cuda:"):
        raise ConfigError(f"run.device={r.device!r}: use auto, cpu, cuda or cuda:N")


def parse_beton(item: str) -> tuple[str, float]:
    """``"in1k.beton:0.3"`` -> ("in1k.beton", 0.3); a plain path has weight 1."""
    path, sep, frac = item.rpartition(":")
    if sep and path:
        try:
            weight = float(frac)
        except ValueError:
            return item, 1.0
        if weight <= 0:
            raise ConfigError(f"{item}: the fraction after ':' must be positive")
        return path, weight
    return item, 1.0


def loader_paths(betons: tuple[str, ...]) -> list[str | tuple[str, float]]:
    """``data.betons`` as ``make_loader`` takes them (a weight only where one was given)."""
    out: list[str | tuple[str, float]] = []
    for item in betons:
        path, weight = parse_beton(item)
        out.append(item if path == item else (path, weight))
    return out


def accumulation(
    optim: OptimConfig, world_size: int, fits: int | None = None, multiple_of: int = 1
) -> tuple[int, int]:
    """(micro batch per device, accumulation steps) whose product is the per-device batch.

    ``optim.micro_batch`` or ``optim.accum`` decide when set; otherwise the largest divisor
    of the per-device batch that is at most ``fits`` (no limit when None), a multiple of
    ``multiple_of`` where one exists (mixup needs pairs).
    """
    per_device, rest = divmod(optim.batch_size, world_size)
    if rest:
        raise ConfigError(
            f"optim.batch_size={optim.batch_size} is not divisible by the {world_size} "
            f"processes; use a multiple of {world_size}"
        )
    micro = optim.micro_batch
    if micro is None and optim.accum is not None:
        if per_device % optim.accum:
            raise ConfigError(
                f"optim.accum={optim.accum} does not divide the per-device batch {per_device} "
                f"(optim.batch_size={optim.batch_size} over {world_size} process(es))"
            )
        micro = per_device // optim.accum
    if micro is None:
        limit = per_device if fits is None else max(1, min(fits, per_device))
        divisors = [d for d in range(1, limit + 1) if per_device % d == 0]
        micro = max([d for d in divisors if d % multiple_of == 0] or divisors)
    steps, rest = divmod(per_device, micro)
    if rest or steps == 0:
        raise ConfigError(
            f"optim.batch_size={optim.batch_size} over {world_size} process(es) is {per_device} "
            f"per device, not a multiple of optim.micro_batch={micro}"
        )
    if optim.accum is not None and optim.accum != steps:
        raise ConfigError(
            f"optim.accum={optim.accum} and optim.micro_batch={micro} disagree: "
            f"{per_device} per device needs accum={steps}"
        )
    return micro, steps


def resume_differences(saved: dict[str, Any], cfg: Any) -> list[tuple]:
    """Settings of ``cfg`` that differ from a saved run's config, run-control keys excepted."""
    return [d for d in config_diff(saved, to_dict(cfg)) if d[0] not in RUN_CONTROL_KEYS]


__all__ = [
    "JOB_CONFIGS",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "EvalDataConfig",
    "EvalModelConfig",
    "FinetuneConfig",
    "FinetuneModelConfig",
    "FinetuneOptimConfig",
    "LinprobeConfig",
    "LinprobeOptimConfig",
    "LoaderConfig",
    "LossConfig",
    "OptimConfig",
    "PretrainRunConfig",
    "ProbeConfig",
    "RunConfig",
    "TrainConfig",
    "accumulation",
    "check_resolution",
    "dump_yaml",
    "load_config",
    "loader_paths",
    "parse_beton",
    "resolve",
    "resume_differences",
    "to_dict",
]
