"""What ``gpu_check.py`` runs in each mode: the sections in priority order, sizes, caps.

``GPU`` is the run on one GPU node with 16 cores (at most 8 minutes, ``budget_s`` from the
script's start); ``CPU`` the rehearsal with tiny settings (``gpu-check.sh --cpu``). The
sections run in the order of ``SECTIONS``; each has a hard cap, and the caps of the GPU
run add up to no more than its budget less ``reserve_s`` (the bundle's install and the
start-up before the first section), so every section gets its cap when the ones before it
hang. A section that finishes early leaves its time to the later ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Most important first (issue 18's order): a short budget loses the last ones.
SECTIONS = (
    "loader",  # 1. loader scaling: pairs and 16 x 4 clips at 1, 4, 8, 16 workers
    "train_b",  # 2. MFU: the ViT-B/16 pretraining step, eager, with its profile
    "train_b_compile",  # 2. the same step compiled
    "train_l",  # 2. ViT-L/16
    "e2e",  # 3. pretraining end to end: data wait over 64-step epochs, starts included
    "finetune_video",  # 4. ViT-B/16 on 16 x 224 x 224 clips: step, MFU, memory; end to end
    "finetune_image",  # 4. the image fine-tune at the recipe's batch; end to end
    "paths",  # the CUDA-only code paths (PASS on 2026-11-26), PASS/FAIL each
)


@dataclass(frozen=True)
class FinetuneRun:
    """One fine-tune section: the step alone (``gpu_finetune.py``), then end to end."""

    config: str  # the preset: its model, optimiser and augmentation settings
    batches: tuple[int, ...]  # per-device batches, largest first: the first that fits
    # Samples per optimiser step end to end; None: the per-device batch (no accumulation).
    global_batch: int | None
    e2e_steps: int  # optimiser steps of `vicmae train finetune`
    log_every: int  # steps per logging window (the first window is the warm-up)
    step_args: tuple[str, ...] = ()  # more gpu_finetune.py arguments
    overrides: tuple[str, ...] = ()  # more key=value for `vicmae train finetune`


@dataclass(frozen=True)
class Settings:
    """Sizes and time caps (seconds) of one mode."""

    arch_b: str = "vit_base_patch16"
    arch_l: str = "vit_large_patch16"
    img_size: int = 224
    batches: tuple[int, ...] = (256, 128, 64)  # the largest that fits is kept
    batch_l: tuple[int, ...] = (128, 64)
    steps: int = 30
    warmup: int = 10
    e2e_steps: int = 192  # three 64-step epochs: each epoch start is in the figures
    e2e_workers: int = 16
    # The .beton joined with itself: epochs of 32 x 512 samples, 64 steps at batch 256, so
    # that per-epoch costs (loader restart, a ViT-B checkpoint) weigh as on a real dataset.
    e2e_copies: int = 32
    e2e_log_every: int = 8
    e2e_overrides: tuple[str, ...] = ()
    # 1 and 16 first: a loader section cut short still has the 16-vs-1 ratio.
    loader_workers: tuple[int, ...] = (1, 16, 4, 8)
    # Epochs of 1,024 pairs (32 batches), 4 per contender and count. No PyAV Dataset: at
    # ~27 pairs/s per worker its epochs at 1..16 workers alone take over 2 minutes.
    loader_args: tuple[str, ...] = tuple(
        "--num-videos 32 --seconds 2 --repeat 32 --rounds 1 --batch-size 32 --no-baselines"
        .split()
    )  # fmt: skip
    # Clips of 16 frames at stride 4 need 64 stored frames (2.2 s at 30 fps); epochs of 64
    # clips (4 batches of 16), 4 per contender and count: ~25 s at 1 worker.
    loader_clip_args: tuple[str, ...] = tuple(
        "--num-videos 16 --seconds 2.2 --repeat 4 --clip-rounds 1 --batch-size 16 "
        "--no-baselines".split()
    )  # fmt: skip
    loader_pairs_share: float = 0.45  # of the loader's cap, for the pairs; clips the rest
    compile: bool = True
    ft_video: FinetuneRun = FinetuneRun(
        config="k400_vitb",  # Table 6, K400 ViT/B: 16 x 4 clips, tubelet 2, its augmentation
        batches=(32, 16, 8),
        # End to end at the per-device batch: accumulating to Table 6's 1,024 changes no
        # samples/s, and 1,024-clip steps would leave too few logging windows in the budget.
        global_batch=None,
        e2e_steps=60,
        log_every=10,
    )
    ft_image: FinetuneRun = FinetuneRun(
        config="places365_vitb",  # Table 6's image recipe (the authors' ImageNet defaults)
        # The authors' scripts/finetune_imagenet_vicmae_base.sh: --batch_size 128 per GPU on
        # 8 GPUs (Table 6's 1,024); smaller ones only if 128 does not fit.
        batches=(128, 64, 32),
        global_batch=1024,  # Table 6, ViT/B: 8 micro-batches of 128 per step on one GPU
        e2e_steps=10,
        log_every=2,
    )
    # Not in the 8 minutes: `compile` (torch.compile runs in train_b_compile) and
    # `finetune_accum` (finetune_image steps at 1,024 = 8 x 128 by accumulation).
    paths_checks: tuple[str, ...] = ("bf16_autocast", "fused_adamw", "sync_batchnorm")
    budget_s: float = 470.0  # all sections together, from the script's start
    reserve_s: float = 12.0  # the bundle's install and the start-up before the sections
    caps: dict[str, float] = field(
        default_factory=lambda: dict(
            loader=110,
            train_b=30,
            train_b_compile=75,
            train_l=28,
            e2e=85,
            finetune_video=65,
            finetune_image=45,
            paths=20,
        )
    )
    allow_cpu: tuple[str, ...] = ()


GPU = Settings()
CPU = Settings(
    arch_b="vit_pico_patch8",
    arch_l="vit_pico_patch8",  # the same code path as ViT-L, at the size of a CPU
    img_size=32,
    batches=(8,),
    batch_l=(4,),
    steps=1,
    warmup=1,
    e2e_steps=8,
    e2e_workers=2,
    e2e_copies=2,
    e2e_log_every=2,
    e2e_overrides=(
        "model.decoder_dim=64",
        "model.decoder_depth=1",
        "model.decoder_heads=2",
        "model.projector_dims=[128,128,128]",
    ),
    loader_workers=(1, 2),
    loader_args=tuple(
        "--num-videos 4 --seconds 1 --repeat 4 --rounds 1 --batch-size 8 --no-baselines".split()
    ),
    loader_clip_args=tuple(
        "--num-videos 2 --seconds 0.6 --repeat 2 --clip-rounds 1 --batch-size 2 "
        "--no-baselines".split()
    ),
    compile=False,  # inductor on a 2-core CPU takes minutes; the GPU run compiles
    ft_video=FinetuneRun(
        config="k400_vitb",
        batches=(4,),
        global_batch=None,
        e2e_steps=4,
        log_every=1,
        step_args=("--frames", "4"),
        overrides=("data.clip_frames=4",),
    ),
    # 16 = 4 micro-batches of 4: the accumulation path, as the GPU run's 8 x 128.
    ft_image=FinetuneRun(
        config="places365_vitb", batches=(4,), global_batch=16, e2e_steps=3, log_every=1
    ),
    # ~4 minutes in all on 2 cores under load; the caps are 3-4x their sections' times, for
    # machines shared with other work (a cap only bounds a hang here: the rehearsal checks
    # plumbing, not speed).
    budget_s=1100.0,
    caps=dict(
        loader=200,
        train_b=120,
        train_b_compile=60,
        train_l=100,
        e2e=200,
        finetune_video=150,
        finetune_image=150,
        paths=100,
    ),
    allow_cpu=("--allow-cpu",),
)
