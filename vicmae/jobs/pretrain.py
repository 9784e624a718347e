"""ViC-MAE pretraining: the model, its loss and its schedules, handed to the engine.

Runs on one CPU, one GPU, or several GPU nodes under ``torchrun``; the engine
(:mod:`vicmae.engine.loop`) does the rest: accumulation, autocast, exact resume, checkpoints,
metrics, stop signals.

Example::

    cfg = load_config(overrides=["data.betons=[k400.beton]", "run.out=runs/k400"])
    result = pretrain(cfg)            # a new run (refused if runs/k400 holds one)
    result = pretrain(cfg, resume=True)  # continue it
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vicmae.config import TrainConfig
from vicmae.engine.batching import probe_step
from vicmae.engine.loop import FitResult, Job, NonFiniteLossError, StepInfo, fit
from vicmae.engine.param_groups import build_optimizer
from vicmae.engine.schedules import lambda_schedule, per_step, scaled_lr, warmup_cosine
from vicmae.engine.setup import start_run
from vicmae.model.vicmae import ViCMAE

__all__ = ["NonFiniteLossError", "PretrainLoss", "pretrain"]


class PretrainLoss:
    """``recon_weight x reconstruction + lambda(step) x contrastive`` on a batch of two views."""

    parts = ("loss", "loss_recon", "loss_contrastive")

    def __init__(self, cfg: TrainConfig, lam: np.ndarray, device: torch.device) -> None:
        self.cfg, self.lam, self.device = cfg, lam, device

    def __call__(self, model: nn.Module, batch, at: StepInfo) -> tuple[Tensor, Tensor]:
        from vicmae_data import to_model_input

        # The device-side augmentation draws from a generator seeded by the step, so it
        # is the same whether or not the run was resumed.
        d = self.cfg.data
        views = to_model_input(  # (B, 2, 3, H, W) float, normalised
            batch, self.device, image_augment=d.image_augment, generator=at.generator(self.device),
            views=d.augment_views, rows=d.augment_rows,
        )  # fmt: skip
        out = model(views)
        lam = float(self.lam[min(at.step, len(self.lam) - 1)])
        loss = self.cfg.loss.recon_weight * out.loss_recon + lam * out.loss_contrastive
        return loss, torch.stack([loss, out.loss_recon, out.loss_contrastive]).detach()


def pretrain(
    cfg: TrainConfig,
    *,
    resume: str | Path | bool | None = None,
    overwrite: bool = False,
    allow_changes: bool = False,
) -> FitResult:
    """Pretrain ViC-MAE as ``cfg`` says; checkpoints and metrics go to ``cfg.run.out``.

    ``resume``/``overwrite``/``allow_changes``: see :func:`vicmae.engine.setup.start_run`.
    """
    if not cfg.data.betons:
        raise ValueError("no .beton to train on (data.betons is empty)")
    with start_run(cfg, "pretrain", resume=resume, overwrite=overwrite,
                   allow_changes=allow_changes) as run:  # fmt: skip
        model = ViCMAE(cfg.model).to(run.device)
        if run.info.distributed and run.device.type == "cuda" and cfg.run.sync_bn:
            # Projector BatchNorm statistics over the global batch (VICReg, MoCo v3).
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        o, res = cfg.optim, cfg.data.resolution
        probe = probe_step(run, model, PretrainLoss(cfg, np.zeros(1), run.device), 2, res)
        micro, accum = run.micro_batching(model, probe, state_bytes_per_param=8)  # AdamW
        loader = run.loader(list(cfg.data.betons), micro, num_views=2, train=True, resolution=res)
        spe = len(loader) // accum
        lr = warmup_cosine(scaled_lr(o.base_lr, o.batch_size), o.min_lr, o.epochs, spe,
                           o.warmup_epochs)  # fmt: skip
        start, weight = cfg.loss.contrastive_start_epoch, cfg.loss.contrastive_weight
        lam = per_step(lambda e: lambda_schedule(e, start, weight), o.epochs, spe)
        job = Job(
            model, build_optimizer(model, o, run.device), loader, micro, accum,
            PretrainLoss(cfg, lam, run.device), lr, part_names=PretrainLoss.parts,
            logged={"lambda": lam}, clip_grad=o.clip_grad,
        )  # fmt: skip
        return fit(run, job)
