"""The three jobs' configurations: pretraining, linear probe, fine-tuning.

- :class:`TrainConfig` (``vicmae train pretrain``): ``model`` (:class:`ModelConfig`),
  ``optim``, ``loss``, ``data``, ``run``; defaults from the paper's Table 5.
- :class:`LinprobeConfig`: ``model`` (:class:`EvalModelConfig`), ``optim`` (Table 7),
  ``probe``, ``data``, ``run``.
- :class:`FinetuneConfig`: ``model`` (:class:`FinetuneModelConfig`), ``optim`` (Table 6),
  ``augment`` (Table 6 and the authors' ``image_finetune.py``), ``test`` (the video
  model's K x J views, section 4), ``data``, ``run``.

The sections they share are in :mod:`vicmae.config.sections`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from vicmae.config.sections import (
    DataConfig,
    EvalDataConfig,
    OptimConfig,
    PretrainRunConfig,
    RunConfig,
)
from vicmae.model.vicmae import ModelConfig

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

    kind: ClassVar[str] = "pretrain"  # the job (``vicmae train KIND``, the run folder's name)
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

    kind: ClassVar[str] = "linprobe"
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
    # Dropout before the head. Images: none (the authors' image_finetune.py, MAE). Video:
    # mae_st main_finetune.py --dropout 0.5, FINETUNE.md 0.3 for ViT-L (the presets).
    head_dropout: float = 0.0
    # Frames per token of the video model (data.sampling clip or segment): mae_st
    # main_finetune.py --t_patch_size 2 (vicmae/model/video_vit.py inflates the 2-D kernel).
    tubelet: int = 2


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
    # Threads applying RandAugment to the next batch while the step trains (PIL releases
    # the GIL); 0: data.num_workers.
    threads: int = 0


@dataclass(frozen=True)
class MultiViewConfig:
    """The video model's test after fine-tuning: every video seen as ``clips`` temporal clips
    x ``crops`` spatial crops, the softmax averaged over all of them (paper section 4:
    "K temporal clips (K = 7 on Kinetics) and for each clip ... 3 spatial views"). Per-epoch
    validation takes one deterministic view (the centre clip, the centre crop); with more
    than one view here the K x J test runs once more on the final weights."""

    clips: int = 1  # K; the Kinetics presets: 7 (section 4); SSv2: 2 (VideoMAE)
    crops: int = 1  # J: 1 (the centre) or 3 (start, centre, end of the long side)


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything ``vicmae train finetune`` needs."""

    kind: ClassVar[str] = "finetune"
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    test: MultiViewConfig = field(default_factory=MultiViewConfig)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    run: RunConfig = field(default_factory=RunConfig)


# What a job runs on: the engine's ``Run.cfg`` is one of these.
JobConfig = TrainConfig | LinprobeConfig | FinetuneConfig
JOB_CONFIGS: dict[str, type] = {c.kind: c for c in (TrainConfig, LinprobeConfig, FinetuneConfig)}
