"""End-to-end fine-tuning (paper appendix A, Table 6): the pretrained encoder plus a linear head.

Through the engine (DDP, bf16, accumulation to the recipe's batch, exact resume, per-epoch
validation, ``best.pt``/``last.pt``, metrics), with the recipe's pieces taken from timm,
as the authors' ``image_finetune.py`` does:

- per sample, after the loader's RandomResizedCrop and flip: RandAugment
  ``rand-m9-mstd0.5-inc1`` (timm's ``rand_augment_transform``: 2 ops, magnitude 9 with
  noise of std 0.5), on the CPU like timm's transform pipeline;
- on the device: normalisation, RandomErasing (timm's, p 0.25, per-pixel noise), then
  Mixup 0.8 / CutMix 1.0 switching with p 0.5 and label smoothing 0.1 (timm's ``Mixup``
  and ``SoftTargetCrossEntropy``);
- AdamW (0.9, 0.999), weight decay 0.05 except norms, biases, class token and position
  embeddings, layer-wise lr decay 0.65 (timm's ``param_groups_layer_decay``), drop path
  0.1, warm-up then cosine per step, lr = base_lr x batch / 256;
- features from the class token after the final norm (``model.pool=mean``: the patch mean
  through a fresh LayerNorm, MAE's global pooling); learned position embeddings.

Validation after every epoch, ``augment.test_views`` passes averaged (see
:class:`vicmae.engine.evaluation.ClassifierEval`).

Example::

    cfg = load_config(None, ["model.checkpoint=runs/k400/last.pt", "data.betons=[train.beton]",
                             "data.val_beton=val.beton"], cls=FinetuneConfig)
    result = finetune(cfg)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vicmae.config import AugmentConfig, ConfigError, FinetuneConfig, parse_beton, to_dict
from vicmae.engine.batching import probe_step
from vicmae.engine.evaluation import (
    ClassifierEval,
    count_classes,
    encoder_features,
    load_encoder,
)
from vicmae.engine.loop import Job, StepInfo, fit
from vicmae.engine.param_groups import build_optimizer
from vicmae.engine.run_folder import write_json
from vicmae.engine.schedules import scaled_lr, warmup_cosine
from vicmae.engine.setup import start_run
from vicmae.model.vit import ViTEncoder


class Classifier(nn.Module):
    """ViT encoder -> class token (or patch mean + LayerNorm) -> Linear."""

    def __init__(self, encoder: ViTEncoder, num_classes: int, pool: str = "cls") -> None:
        super().__init__()
        self.encoder = encoder
        self.pool = pool
        # The class token is already normed by the encoder's final norm (timm, the authors'
        # models_vit.py); the patch mean gets its own norm as MAE's global pooling does.
        self.fc_norm = nn.LayerNorm(encoder.embed_dim, eps=1e-6) if pool == "mean" else None
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        # The authors' image_finetune.py: trunc_normal_(head.weight, std=2e-5), bias 0.
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, imgs: Tensor) -> Tensor:
        """imgs: (N, 3, H, W) -> logits (N, num_classes)."""
        x = encoder_features(self.encoder, imgs, self.pool)  # (N, D)
        return self.head(self.fc_norm(x) if self.fc_norm is not None else x)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layers for timm's layer-wise lr decay: embeddings 0, block i at i + 1, and the
        final norm and head unmatched, hence last (full lr), as MAE's util/lr_decay.py
        (which the authors' image_finetune.py calls) assigns them."""
        return {
            "stem": r"^encoder\.(?:cls_token|pos_embed|patch_embed)",
            "blocks": [(r"^encoder\.blocks\.(\d+)", None)],
        }


class FinetuneLoss:
    """RandAugment (CPU, per sample) -> normalise -> RandomErasing -> Mixup/CutMix -> loss."""

    def __init__(self, aug: AugmentConfig, num_classes: int, res: int, device: torch.device):
        from timm.data import Mixup, rand_augment_transform
        from timm.data.random_erasing import RandomErasing
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        from vicmae_data.load.augment import IMAGENET_MEAN

        self.device = device
        self.randaug = None
        if aug.randaugment:
            # hparams as timm's create_transform sets them for this input size.
            mean = tuple(round(255 * m) for m in IMAGENET_MEAN)
            hparams = {"translate_const": int(res * 0.45), "img_mean": mean}
            self.randaug = rand_augment_transform(aug.randaugment, hparams)
        self.erase = None
        if aug.reprob > 0:
            self.erase = RandomErasing(aug.reprob, mode=aug.remode, max_count=1, device=device)
        self.mixup = None
        if aug.mixup > 0 or aug.cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mixup_prob,
                switch_prob=aug.switch_prob, label_smoothing=aug.label_smoothing,
                num_classes=num_classes,
            )  # fmt: skip
            self.criterion: nn.Module = SoftTargetCrossEntropy()  # smoothing is in the targets
        elif aug.label_smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(aug.label_smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()

    def __call__(self, model: nn.Module, batch: Any, at: StepInfo) -> tuple[Tensor, Tensor]:
        from vicmae_data import to_model_input

        if self.randaug is not None:
            batch = batch._replace(views=self._randaugment(batch.views[:, 0])[:, None])
        x = to_model_input(batch, self.device, image_augment=False)[:, 0]  # (B, 3, H, W)
        y = batch.labels.to(self.device).long()
        if self.erase is not None:
            x = self.erase(x)  # per sample, in place
        if self.mixup is not None:
            x, y = self.mixup(x, y)  # y: (B, num_classes) soft targets
        loss = self.criterion(model(x), y)
        return loss, loss.detach()[None]

    def _randaugment(self, views: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> the same, each sample through timm's RandAugment (PIL)."""
        from PIL import Image

        out = []
        for v in views.cpu():
            img = Image.fromarray(v.permute(1, 2, 0).numpy())
            out.append(torch.from_numpy(np.array(self.randaug(img))))  # (H, W, 3)
        return torch.stack(out).permute(0, 3, 1, 2).contiguous()


def finetune(
    cfg: FinetuneConfig,
    *,
    resume: str | Path | bool | None = None,
    overwrite: bool = False,
    allow_changes: bool = False,
) -> dict[str, Any]:
    """Fine-tune and validate; return (and write as ``RUN/result.json``) the figures."""
    from timm.optim import param_groups_layer_decay

    if not cfg.data.betons:
        raise ValueError("no training .beton (data.betons is empty)")
    o, m = cfg.optim, cfg.model
    # The checkpoint, resolution and labels are checked before the run starts.
    torch.manual_seed(cfg.run.seed)  # a random-init encoder is the same on every rank
    encoder, res, arch = load_encoder(m, cfg.data.resolution, drop_path=m.drop_path)
    if m.learn_pos_embed:
        encoder.learn_pos_embed()
    classes = count_classes([parse_beton(b)[0] for b in cfg.data.betons], cfg.data.val_beton)
    with start_run(cfg, "finetune", resume=resume, overwrite=overwrite,
                   allow_changes=allow_changes) as run:  # fmt: skip
        model = Classifier(encoder, classes, m.pool).to(run.device)
        loss = FinetuneLoss(cfg.augment, classes, res, run.device)
        pairs = 2 if loss.mixup is not None else 1  # mixup and cutmix mix pairs of samples
        micro, accum = run.micro_batching(model, probe_step(run, model, loss, 1, res), 8, pairs)
        if loss.mixup is not None and micro % 2:
            raise ConfigError(f"mixup/cutmix mix pairs of samples: micro-batch {micro} is odd")
        loader = run.loader(list(cfg.data.betons), micro, num_views=1, train=True,
                            resolution=res)  # fmt: skip
        spe = len(loader) // accum
        lr = warmup_cosine(scaled_lr(o.base_lr, o.batch_size), o.min_lr, o.epochs, spe,
                           o.warmup_epochs)  # fmt: skip
        groups = param_groups_layer_decay(
            model, o.weight_decay, ("encoder.cls_token", "encoder.pos_embed"),
            layer_decay=o.layer_decay if o.layer_decay is not None else 1.0,
        )  # fmt: skip
        evaluate = None
        if cfg.data.val_beton:
            evaluate = ClassifierEval(run, cfg.data.val_beton, res, micro, cfg.augment.test_views)
        job = Job(model, build_optimizer(groups, o, run.device), loader, micro, accum, loss, lr,
                  evaluate=evaluate, best=("val_top1", "max"), clip_grad=o.clip_grad)  # fmt: skip
        result = fit(run, job)
        out = {
            **result.val_metrics, "best": result.best, "step": result.step,
            "num_classes": classes, "arch": arch, "resolution": res,
            "checkpoint": m.checkpoint, "test_views": cfg.augment.test_views,
            "config": to_dict(cfg),
        }  # fmt: skip
        if run.info.is_main:
            out["out"] = str(write_json(run.dir / "result.json", out))
        return out
