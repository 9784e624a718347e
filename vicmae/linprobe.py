"""Linear probe (paper appendix, Table 7): frozen encoder, BatchNorm without affine + Linear.

What we do, and where it differs from the paper:

- The encoder is frozen and the evaluation transform (centre frame, centre crop) is
  deterministic, so features are extracted **once** for the training and validation sets
  and the head is trained on the cached features for ``epochs`` epochs. The paper draws a
  RandomResizedCrop every epoch instead; caching makes the probe ``epochs`` times cheaper
  (what lets the CPU demo run 90 probe epochs in seconds) at the cost of that augmentation.
- SGD, momentum 0.9, weight decay 0, lr = 0.1 x batch / 256 with warm-up then cosine per
  step (paper values; the batch is capped at the training-set size).
- Features: ``pool="mean"`` (patch-token mean, the pooling the contrastive loss trains) by
  default; the paper reports similar numbers with the cls token (``pool=cls``).

Example::

    result = linprobe(LinprobeConfig(train_beton="train.beton", val_beton="val.beton",
                                     checkpoint="runs/k400/checkpoint.pt"))
    result["top1"], result["top5"]
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 (torch's convention)
from torch import nn

from vicmae.checkpoint import load_checkpoint, model_state
from vicmae.model import ModelConfig, ViCMAE
from vicmae.schedules import scaled_lr, warmup_cosine

log = logging.getLogger("vicmae")


@dataclass(frozen=True)
class LinprobeConfig:
    """Linear-probe settings (paper Table 7 defaults)."""

    train_beton: str = ""
    val_beton: str = ""
    checkpoint: str | None = None
    random_init: bool = False  # probe a randomly initialised encoder of the same arch
    arch: str | None = None  # without a checkpoint: the arch to initialise
    resolution: int | None = None  # None: the checkpoint's (or 224)
    pool: Literal["mean", "cls"] = "mean"
    epochs: int = 90
    warmup_epochs: float = 10.0
    batch_size: int = 4096
    base_lr: float = 0.1  # lr = base_lr x batch / 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    extract_batch: int = 64  # samples per encoder forward when caching features
    num_workers: int = 2
    seed: int = 0
    device: str = "auto"
    out: str | None = None  # JSON result path; None: beside the checkpoint (or not written)


def load_encoder_model(
    checkpoint: str | os.PathLike | None,
    *,
    random_init: bool = False,
    arch: str | None = None,
    img_size: int | None = None,
    drop_path: float | None = None,
) -> ViCMAE:
    """A ViCMAE built from a checkpoint's config, with its weights unless ``random_init``."""
    state = load_checkpoint(checkpoint) if checkpoint is not None else None
    if state is not None and "config" in state:
        mcfg = ModelConfig.from_dict(dict(state["config"]["model"]))
    elif arch is not None:
        mcfg = ModelConfig(arch=arch)
    else:
        raise ValueError("a checkpoint without a config needs arch=... to build the model")
    changes = {}
    if arch is not None:
        changes["arch"] = arch
    if img_size is not None:
        changes["img_size"] = img_size
    if drop_path is not None:
        changes["drop_path"] = drop_path
    mcfg = ModelConfig(**{**asdict(mcfg), **changes})
    model = ViCMAE(mcfg)
    if state is not None and not random_init:
        model.load_state_dict(model_state(state))
    return model


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def extract_features(
    model: ViCMAE,
    beton: str,
    *,
    resolution: int,
    pool: str,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder features of every sample (centre frame, centre crop) -> ((n, D), (n,))."""
    from vicmae_data.load.augment import to_model_input
    from vicmae_data.load.loader import make_loader

    loader = make_loader(
        beton, batch_size, num_workers=num_workers, num_views=1, resolution=resolution,
        drop_last=False, train=False,
    )  # fmt: skip
    model.eval()
    feats, labels = [], []
    for batch in loader:
        x = to_model_input(batch, device, image_augment=False)[:, 0]  # (B, 3, H, W)
        feats.append(model.features(x, pool=pool).float().cpu())  # (B, D)
        labels.append(batch.labels.cpu())
    if not feats:
        raise ValueError(f"{beton}: no samples")
    return torch.cat(feats), torch.cat(labels).long()


def accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list:
    """Top-k accuracies in percent (k capped at the number of classes)."""
    out = []
    for k in ks:
        k = min(k, logits.shape[1])
        top = logits.topk(k, dim=1).indices  # (n, k)
        out.append(100.0 * (top == labels[:, None]).any(dim=1).float().mean().item())
    return out


def train_head(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    cfg: LinprobeConfig,
) -> nn.Module:
    """BatchNorm1d(affine=False) + Linear trained with SGD on cached features (n, D)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    n, D = train_x.shape
    head = nn.Sequential(nn.BatchNorm1d(D, affine=False, eps=1e-6), nn.Linear(D, num_classes))
    nn.init.trunc_normal_(head[1].weight, std=0.01)  # MAE's probe init
    nn.init.zeros_(head[1].bias)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = -(-n // bs)
    lrs = warmup_cosine(
        scaled_lr(cfg.base_lr, bs), 0.0, cfg.epochs, steps_per_epoch, cfg.warmup_epochs
    )
    opt = torch.optim.SGD(
        head.parameters(), lr=0.0, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    head.train()
    step = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * bs : (i + 1) * bs]
            if idx.numel() < 2:  # BatchNorm needs two samples
                continue
            for g in opt.param_groups:
                g["lr"] = float(lrs[step])
            loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return head.eval()


def linprobe(cfg: LinprobeConfig) -> dict:
    """Run the probe; return (and write as JSON) ``top1``, ``top5`` and what was probed."""
    for path in (cfg.train_beton, cfg.val_beton):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such .beton file")
    torch.manual_seed(cfg.seed)  # the random-init encoder is the same for a given seed
    device = _device(cfg.device)
    model = load_encoder_model(
        cfg.checkpoint, random_init=cfg.random_init, arch=cfg.arch, img_size=cfg.resolution
    ).to(device)
    res = model.cfg.img_size
    common = dict(
        resolution=res, pool=cfg.pool, batch_size=cfg.extract_batch,
        num_workers=cfg.num_workers, device=device,
    )  # fmt: skip
    train_x, train_y = extract_features(model, cfg.train_beton, **common)
    val_x, val_y = extract_features(model, cfg.val_beton, **common)
    num_classes = int(max(train_y.max().item(), val_y.max().item())) + 1
    log.info(
        "linprobe: %d train / %d val features of width %d, %d classes",
        len(train_y), len(val_y), train_x.shape[1], num_classes,
    )  # fmt: skip
    head = train_head(train_x, train_y, num_classes, cfg)
    with torch.no_grad():
        top1, top5 = accuracy(head(val_x), val_y)
        train_top1 = accuracy(head(train_x), train_y, (1,))[0]
    result = {
        "top1": top1,
        "top5": top5,
        "train_top1": train_top1,
        "num_train": len(train_y),
        "num_val": len(val_y),
        "num_classes": num_classes,
        "arch": model.cfg.arch,
        "checkpoint": cfg.checkpoint,
        "random_init": cfg.random_init,
        "config": asdict(cfg),
    }
    out = cfg.out
    if out is None and cfg.checkpoint is not None:
        name = "linprobe_random_init.json" if cfg.random_init else "linprobe.json"
        out = str(Path(cfg.checkpoint).parent / name)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(out + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, out)
        result["out"] = out
    return result
