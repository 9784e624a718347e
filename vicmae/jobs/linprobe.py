"""Linear probe (paper appendix A, Table 7): frozen encoder, BatchNorm without affine + Linear.

By default the paper's protocol, through the engine (DDP, bf16, accumulation, exact
resume, per-epoch validation, ``best.pt``/``last.pt``, metrics): every step the frozen
encoder sees a RandomResizedCrop (drawn every epoch by the real loader) and its class
token feeds ``BatchNorm1d(affine=False) -> Linear``, trained with SGD (base lr 0.1 x
batch / 256, momentum 0.9, weight decay 0, 90 epochs, 10 warm-up, cosine; batch 4096).

``probe.cached=true`` is the fast option: features of the centre view computed once and
the head trained on them (epochs x cheaper, no augmentation, one process).

Example::

    cfg = load_config(None, ["model.checkpoint=runs/k400/last.pt",
                             "data.betons=[train.beton]", "data.val_beton=val.beton"],
                      cls=LinprobeConfig)
    result = linprobe(cfg)      # result["val_top1"]; RUN/result.json
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's convention)
from torch import Tensor, nn

from vicmae.config import ConfigError, LinprobeConfig, parse_beton, to_dict
from vicmae.engine.batching import probe_step
from vicmae.engine.evaluation import (
    ClassifierEval,
    classification_metrics,
    count_classes,
    encoder_features,
    load_encoder,
)
from vicmae.engine.loop import Job, StepInfo, fit
from vicmae.engine.metrics import MetricsLogger
from vicmae.engine.param_groups import build_optimizer
from vicmae.engine.run_folder import write_json
from vicmae.engine.schedules import scaled_lr, warmup_cosine
from vicmae.engine.setup import Run, start_run

log = logging.getLogger("vicmae")


class LinearProbe(nn.Module):
    """Frozen encoder -> pooled feature -> BatchNorm1d(affine=False) -> Linear (Table 7)."""

    def __init__(self, encoder: nn.Module, num_classes: int, pool: str) -> None:
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.pool = pool
        dim = encoder.embed_dim
        # eps 1e-6 and the head's init (trunc normal, std 0.01) as MAE's main_linprobe.py.
        self.head = nn.Sequential(
            nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes)
        )
        nn.init.trunc_normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.encoder.eval()  # frozen: never in training mode
        return self

    def forward(self, imgs: Tensor) -> Tensor:
        """imgs (N, 3, H, W) -> logits (N, num_classes)."""
        with torch.no_grad():
            feats = encoder_features(self.encoder, imgs, self.pool)  # (N, D)
        return self.head(feats)


class ProbeLoss:
    """Cross-entropy of the probe on one batch's single view."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, model: nn.Module, batch: Any, at: StepInfo) -> tuple[Tensor, Tensor]:
        from vicmae_data import to_model_input

        x = to_model_input(batch, self.device, image_augment=False)[:, 0]  # (B, 3, H, W)
        loss = F.cross_entropy(model(x), batch.labels.to(self.device).long())
        return loss, loss.detach()[None]


def linprobe(
    cfg: LinprobeConfig,
    *,
    resume: str | Path | bool | None = None,
    overwrite: bool = False,
    allow_changes: bool = False,
) -> dict[str, Any]:
    """Run the probe; return (and write as ``RUN/result.json``) the validation figures."""
    if not cfg.data.betons:
        raise ValueError("no training .beton (data.betons is empty)")
    if cfg.probe.cached and resume:
        raise ConfigError("probe.cached=true trains in seconds and has no --resume; rerun it")
    # The checkpoint, resolution and labels are checked before the run starts.
    torch.manual_seed(cfg.run.seed)  # a random-init encoder is the same on every rank
    encoder, res, arch = load_encoder(cfg.model, cfg.data.resolution)
    classes = count_classes([parse_beton(b)[0] for b in cfg.data.betons], cfg.data.val_beton)
    with start_run(cfg, "linprobe", resume=resume, overwrite=overwrite,
                   allow_changes=allow_changes) as run:  # fmt: skip
        model = LinearProbe(encoder, classes, cfg.model.pool).to(run.device)
        if cfg.probe.cached:
            val = _cached_probe(run, model, res)
        else:
            val = _probe(run, model, res)
        result = {
            **val, "num_classes": classes, "arch": arch, "resolution": res,
            "checkpoint": cfg.model.checkpoint, "random_init": cfg.model.random_init,
            "config": to_dict(cfg),
        }  # fmt: skip
        if run.info.is_main:
            result["out"] = str(write_json(run.dir / "result.json", result))
        return result


def _probe(run: Run, model: LinearProbe, res: int) -> dict[str, float]:
    cfg, o = run.cfg, run.cfg.optim
    loss = ProbeLoss(run.device)
    probe = probe_step(run, model, loss, 1, res)
    micro, accum = run.micro_batching(model, probe, state_bytes_per_param=4)  # SGD momentum
    loader = run.loader(list(cfg.data.betons), micro, num_views=1, train=True, resolution=res)
    spe = len(loader) // accum
    lr = warmup_cosine(scaled_lr(o.base_lr, o.batch_size), o.min_lr, o.epochs, spe,
                       o.warmup_epochs)  # fmt: skip
    evaluate = ClassifierEval(run, cfg.data.val_beton, res, micro) if cfg.data.val_beton else None
    optimizer = build_optimizer(model.head, o, run.device)
    job = Job(model, optimizer, loader, micro, accum, loss, lr, evaluate=evaluate,
              best=("val_top1", "max"), clip_grad=o.clip_grad)  # fmt: skip
    result = fit(run, job)
    return {**result.val_metrics, "best": result.best, "step": result.step}


@torch.no_grad()
def extract_features(run: Run, model: LinearProbe, beton: str, res: int) -> tuple[Tensor, Tensor]:
    """Features of every sample's centre view -> ((n, D) on the CPU, (n,) labels)."""
    from vicmae_data import to_model_input

    loader = run.loader(beton, run.cfg.probe.extract_batch, num_views=1, train=False,
                        resolution=res, drop_last=False)  # fmt: skip
    feats, labels = [], []
    for batch in loader:
        x = to_model_input(batch, run.device, image_augment=False)[:, 0]  # (B, 3, H, W)
        with run.autocast():
            f = encoder_features(model.encoder, x, model.pool)
        feats.append(f.float().cpu())  # (B, D)
        labels.append(batch.labels.cpu().long())
    return torch.cat(feats), torch.cat(labels)


def _cached_probe(run: Run, model: LinearProbe, res: int) -> dict[str, float]:
    """The head trained on cached centre-view features (``probe.cached``), one process."""
    cfg, o = run.cfg, run.cfg.optim
    if run.info.distributed:
        raise ConfigError("probe.cached=true runs in one process; start it without torchrun")
    train_x, train_y = extract_features(run, model, cfg.data.betons[0], res)
    val = extract_features(run, model, cfg.data.val_beton, res) if cfg.data.val_beton else None
    head = model.head.cpu()
    n = len(train_y)
    bs = min(o.batch_size, n)  # a small dataset is one batch
    spe = -(-n // bs)
    lrs = warmup_cosine(scaled_lr(o.base_lr, bs), o.min_lr, o.epochs, spe, o.warmup_epochs)
    opt = build_optimizer(head, o, torch.device("cpu"))
    gen = torch.Generator().manual_seed(cfg.run.seed)
    metrics: dict[str, float] = {}
    with MetricsLogger(run.dir, o.epochs * spe, enabled=run.info.is_main, progress=False,
                       label="linprobe") as ml:  # fmt: skip
        step = 0
        for epoch in range(o.epochs):
            head.train()
            order = torch.randperm(n, generator=gen)
            for i in range(spe):
                idx = order[i * bs : (i + 1) * bs]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                for g in opt.param_groups:
                    g["lr"] = float(lrs[step])
                loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            row = {"epoch": epoch + 1.0, "loss": loss.item(), "lr": float(lrs[step - 1])}
            if val is not None:
                with torch.no_grad():
                    metrics = classification_metrics(head.eval()(val[0]).softmax(1), val[1])
                row |= metrics
            ml.log(step, row)
    return metrics
