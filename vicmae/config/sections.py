"""The sections every job shares: optimiser, loader, data, run.

Each job's config (:mod:`vicmae.config.jobs`) is made of these, so the same key means the
same thing in every job (``optim.epochs``, ``optim.batch_size``, ``data.betons``,
``run.out``...). Defaults are pretraining's (paper Table 5); a job overrides them in a
subclass that names its own source (e.g. :class:`~vicmae.config.jobs.LinprobeOptimConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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

    # Training .beton paths, mixed as ``mix`` says. With mix "weights", "in1k.beton:0.3"
    # weighs a file 0.3 against 1 for a plain path: beside one plain file, 0.3 / 1.3 of
    # every batch. No recipe states a weight: the authors concatenate (below).
    betons: tuple[str, ...] = ()
    # How several training files are mixed (vicmae_data/load/mixing.py). "weights": each
    # file a fixed share of every batch by its weight, the first file defining the epoch.
    # "concat": the files as one concatenated dataset, one epoch = one pass over every
    # sample of every file, each batch taking from each file in proportion to its size:
    # the authors' run (scripts/pretrain_in1k_k400.sh trains on one in1k_k400_train.ffcv).
    # One file: the two are the same.
    mix: Literal["weights", "concat"] = "weights"
    # Check each sample's CRC32 before decoding it (training and validation files): one
    # that fails is left black and named in the epoch's warning. Off: the loader reads only
    # the bytes it decodes; `vicmae-data verify FILE` checks a whole file.
    check_crc: bool = False
    # The model's input size. None: model.img_size (pretraining), else the checkpoint's.
    resolution: int | None = None
    # Paper Table 3 and section 5.4: distant sampling ("D") beats every continuous
    # separation; 8 is Table 3's largest (and best) continuous separation delta, a frame in
    # (i, i + delta]. The loader's own defaults (make_loader, view_plan) are these.
    sampling: Literal["distant", "continuous"] = "distant"
    delta: int = 8
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
    """Evaluation data: training and validation files, RandomResizedCrop for training.

    ``sampling``: one frame per sample (``distant`` with one view: a random frame of a
    video, the image itself), or a clip for the video model (fine-tuning only): ``clip``,
    ``clip_frames`` frames at ``clip_stride`` (ST-MAE's Kinetics clips), or ``segment``, one
    frame from each of ``clip_frames`` segments (VideoMAE's Something-Something v2 clips).
    """

    sampling: Literal["distant", "continuous", "clip", "segment"] = "distant"
    # Clips: facebookresearch/mae_st FINETUNE.md, --num_frames 16 --sampling_rate 4 (their
    # Kinetics-400 ViT-L fine-tune); VideoMAE samples SSv2 as 16 segments (--num_frames 16).
    clip_frames: int = 16
    clip_stride: int = 4
    # Horizontal flips in training. VideoMAE ssv2.py: none on Something-Something v2, whose
    # labels say "left to right".
    flip: bool = True
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
    # Stop early (smoke runs, benchmarks); schedules unchanged. --resume does not carry it
    # over: a resumed run goes to its end unless it is given again.
    max_steps: int | None = None
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
    "run.wandb_project", "data.num_workers", "data.memory", "data.check_crc",
)  # fmt: skip
