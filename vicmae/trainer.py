"""ViC-MAE pretraining: one loop, read top to bottom (like nanoGPT's train.py), importable.

The same code runs on one CPU, one GPU, and several GPU nodes under ``torchrun``
(DistributedDataParallel: NCCL on CUDA, gloo on CPU; set up from the environment when
``WORLD_SIZE`` is set). Each optimiser step consumes ``optim.batch_size`` samples in all:
``micro_batch`` per device per forward, ``accum`` forwards per device, ``world_size`` devices.

Resume: a checkpoint records the global step, the epoch and how many of that epoch's
loader batches were consumed. ``resume=True`` restores model, optimiser, scaler and RNG
states, re-creates the loader at that epoch and *skips* the consumed batches (the loader's
order and crops are a function of seed and epoch, so the skipped batches are the ones the
interrupted run saw). The lr and lambda schedules are arrays indexed by the global step, so
the resumed run reads the same values. Skipping costs loading time, never correctness.

Example::

    cfg = load_config(overrides=["data.betons=[k400.beton]", "run.out=runs/k400"])
    result = pretrain(cfg)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vicmae.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vicmae.config import TrainConfig, accumulation, dump_yaml, to_dict
from vicmae.logging_utils import MetricsLogger
from vicmae.schedules import per_step, scaled_lr, warmup_cosine

log = logging.getLogger("vicmae")

CHECKPOINT_NAME = "checkpoint.pt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before saving anything from it."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class PretrainResult:
    """What a finished (or stopped-early) run leaves behind."""

    run_dir: Path
    step: int
    epoch: int
    checkpoint: Path | None
    last_metrics: dict[str, Any]


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` set), else one process."""
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu") if device in ("auto", "cpu") else torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python from one number."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on weights only (not norms, biases, tokens, position embeddings)."""
    from vicmae.param_groups import param_groups

    groups = param_groups(model, cfg.optim.weight_decay)
    fused = cfg.optim.fused and device.type == "cuda"
    return torch.optim.AdamW(groups, lr=0.0, betas=cfg.optim.betas, fused=fused or None)


def _autocast(
    cfg: TrainConfig, device: torch.device
) -> tuple[contextlib.AbstractContextManager, bool]:
    """The autocast context for the configured precision, and whether fp16 loss scaling is on."""
    prec = cfg.run.precision
    if prec == "auto":
        prec = "bf16" if device.type == "cuda" else "fp32"
    if prec == "fp32":
        return contextlib.nullcontext(), False
    dtype = torch.bfloat16 if prec == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype), prec == "fp16"


def pretrain(cfg: TrainConfig, *, resume: bool = False) -> PretrainResult:
    """Pretrain ViC-MAE as ``cfg`` says; write checkpoints and metrics under ``cfg.run.out``."""
    from vicmae.losses import lambda_schedule
    from vicmae.model import ViCMAE
    from vicmae_data.load.augment import to_model_input
    from vicmae_data.load.loader import make_loader

    if not cfg.data.betons:
        raise ValueError("no .beton to train on (data.betons is empty)")
    info = setup_distributed(cfg.run.device)
    device = info.device
    run_dir = Path(cfg.run.out)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        log.info("config:\n%s", dump_yaml(cfg))
    # Each rank draws its own masks; the loader shards and seeds data by rank itself.
    seed_everything(cfg.run.seed + info.rank)

    # --- data: micro_batch per device per forward, accum forwards per optimiser step
    micro, accum = accumulation(cfg.optim, info.world_size)
    loader = make_loader(
        _loader_paths(cfg.data.betons),
        micro,
        num_workers=cfg.data.num_workers,
        sampling=cfg.data.sampling,
        delta=cfg.data.delta,
        num_views=2,
        resolution=cfg.data.resolution,
        distributed=info.distributed,
        rank=info.rank if info.distributed else None,
        world_size=info.world_size if info.distributed else None,
        seed=cfg.run.seed,
        memory=cfg.data.memory,
        drop_last=True,
        epoch=0,
        train=True,
        video_scale=cfg.data.video_scale,
        image_scale=cfg.data.image_scale,
    )
    steps_per_epoch = len(loader) // accum  # a last partial accumulation is dropped
    if steps_per_epoch == 0:
        raise ValueError(
            f"an epoch has {len(loader)} batches of {micro}, fewer than one optimiser step "
            f"({accum} x {micro} per device); use a smaller optim.batch_size"
        )
    total_steps = cfg.optim.epochs * steps_per_epoch

    # --- model, optimiser, schedules
    model = ViCMAE(cfg.model).to(device)
    if info.distributed and device.type == "cuda" and cfg.run.sync_bn:
        # Projector BatchNorm statistics over the global batch, as VICReg and MoCo v3 (whose
        # projectors the paper follows) do; the paper does not say what the authors did.
        # SyncBatchNorm needs CUDA, so multi-process CPU (gloo) runs keep per-process stats.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    raw_model = model  # what checkpoints save: no DDP/compile wrappers
    optimizer = build_optimizer(model, cfg, device)
    autocast, use_scaler = _autocast(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    peak_lr = scaled_lr(cfg.optim.base_lr, cfg.optim.batch_size)
    lr_at = warmup_cosine(
        peak_lr, cfg.optim.min_lr, cfg.optim.epochs, steps_per_epoch, cfg.optim.warmup_epochs
    )
    lam_at = per_step(
        lambda e: lambda_schedule(
            e, start_epoch=cfg.loss.contrastive_start_epoch, weight=cfg.loss.contrastive_weight
        ),
        cfg.optim.epochs,
        steps_per_epoch,
    )

    # --- resume: the step, epoch position and every RNG come back exactly
    step, epoch, skip = 0, 0, 0
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, map_location=device)
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, skip = state["step"], state["epoch"], state["batch_in_epoch"]
        set_rng_state(state["rng"][min(info.rank, len(state["rng"]) - 1)])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_path, step, epoch, skip)
        if info.is_main:
            _truncate_metrics(run_dir / "metrics.jsonl", step)
    elif resume:
        log.warning("--resume: no checkpoint at %s; starting from scratch", ckpt_path)

    if info.distributed:
        ids = [info.local_rank] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.run.compile:
        model = torch.compile(model)

    log.info(
        "%d optimiser steps (%d epochs x %d); batch %d = %d per forward x %d accumulation x %d "
        "device(s); peak lr %.3g; %s",
        total_steps, cfg.optim.epochs, steps_per_epoch, cfg.optim.batch_size, micro, accum,
        info.world_size, peak_lr, device,
    )  # fmt: skip

    def save(batch_in_epoch: int, at_epoch: int) -> Path | None:
        # Every rank's RNG goes in (gathered to rank 0), so each rank resumes its own stream.
        states = [rng_state()]
        if info.distributed:
            states = [None] * info.world_size
            dist.all_gather_object(states, rng_state())
        if not info.is_main:
            return None
        return save_checkpoint(
            ckpt_path,
            {
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "epoch": at_epoch,
                "batch_in_epoch": batch_in_epoch,
                "loader_epoch": at_epoch,
                "rng": states,
                "config": to_dict(cfg),
                "arch": cfg.model.arch,
            },
        )

    max_steps = min(total_steps, cfg.run.max_steps or total_steps)
    last: dict[str, Any] = {}
    saved: Path | None = ckpt_path if ckpt_path.is_file() and resume else None
    metrics = MetricsLogger(
        run_dir, total_steps=max_steps, enabled=info.is_main, progress=cfg.run.progress,
        start_step=step,
    )  # fmt: skip
    model.train()
    try:
        t_log, wait_log, steps_log = time.perf_counter(), 0.0, 0
        while step < max_steps:
            loader.set_epoch(epoch)
            batches = iter(loader)
            if skip:  # batches the interrupted run already trained on
                for _ in range(skip):
                    next(batches)
                t_log = time.perf_counter()
            consumed = skip
            skip = 0
            while consumed + accum <= steps_per_epoch * accum and step < max_steps:
                lr, lam = float(lr_at[step]), float(lam_at[step])
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                loss_sum = torch.zeros(3, device=device)  # total, recon, contrastive
                for micro_step in range(accum):
                    t0 = time.perf_counter()
                    batch = next(batches)
                    wait_log += time.perf_counter() - t0
                    # The GPU-side augmentation draws from a generator seeded by the step,
                    # so it is the same whether or not the run was resumed.
                    gen = torch.Generator(device=device)
                    gen.manual_seed(_mix(cfg.run.seed, step, micro_step, info.rank))
                    views = to_model_input(  # (B, 2, 3, H, W) float, normalised
                        batch,
                        device,
                        image_augment=cfg.data.image_augment,
                        generator=gen,
                        views=cfg.data.augment_views,
                        rows=cfg.data.augment_rows,
                    )
                    # Gradients are all-reduced only on the last micro-step.
                    sync = micro_step == accum - 1 or not info.distributed
                    with contextlib.nullcontext() if sync else model.no_sync(), autocast:
                        out = model(views)
                        loss = cfg.loss.recon_weight * out.loss_recon + lam * out.loss_contrastive
                    scaler.scale(loss / accum).backward()
                    parts = (loss, out.loss_recon, out.loss_contrastive)
                    loss_sum += torch.stack([x.detach().float() for x in parts]) / accum
                consumed += accum
                if info.distributed:
                    dist.all_reduce(loss_sum)
                    loss_sum /= info.world_size
                values = loss_sum.tolist()
                if not math.isfinite(values[0]):
                    raise NonFiniteLossError(
                        f"loss is {values[0]} at step {step + 1} (epoch {epoch}); stopped. "
                        + (f"Last good checkpoint: {saved}" if saved else "No checkpoint yet.")
                    )
                if cfg.optim.clip_grad:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                steps_log += 1

                if step % cfg.run.log_every_steps == 0 or step == max_steps:
                    elapsed = time.perf_counter() - t_log
                    last = {
                        "epoch": epoch + consumed / (steps_per_epoch * accum),
                        "loss": values[0],
                        "loss_recon": values[1],
                        "loss_contrastive": values[2],
                        "lr": lr,
                        "lambda": lam,
                        "samples_per_s": steps_log * cfg.optim.batch_size / max(elapsed, 1e-9),
                        "data_wait_pct": 100.0 * wait_log / max(elapsed, 1e-9),
                    }
                    metrics.log(step, last)
                    t_log, wait_log, steps_log = time.perf_counter(), 0.0, 0
                else:
                    metrics.advance(step)
                at_epoch_end = consumed >= steps_per_epoch * accum
                if at_epoch_end:
                    epoch, consumed = epoch + 1, 0
                if step % cfg.run.ckpt_every_steps == 0 or at_epoch_end or step == max_steps:
                    saved = save(consumed, epoch) or saved
                if at_epoch_end:
                    break
    finally:
        metrics.close()
    return PretrainResult(run_dir, step, epoch, saved, last)


def _loader_paths(betons: tuple[str, ...]) -> list[str | tuple[str, float]]:
    """``"in1k.beton:0.3"`` -> ("in1k.beton", 0.3); a plain path stays a path."""
    out: list[str | tuple[str, float]] = []
    for item in betons:
        path, _, frac = item.rpartition(":")
        if path and _is_float(frac):
            out.append((path, float(frac)))
        else:
            out.append(item)
    return out


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _mix(*parts: int) -> int:
    """A 63-bit seed from several integers (distinct parts give distinct seeds)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & (2**63 - 1)
    return h


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (the interrupted run went past its last checkpoint)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if _row_step(ln) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


def _row_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf  # a torn last line goes too
