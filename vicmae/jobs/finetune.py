"""End-to-end fine-tuning (paper appendix A, Table 6): the pretrained encoder plus a linear head.

Through the engine (DDP, bf16, accumulation to the recipe's batch, exact resume, per-epoch
validation, ``best.pt``/``last.pt``, metrics), with the recipe's pieces taken from timm,
as the authors' ``image_finetune.py`` does:

- per sample, after the loader's RandomResizedCrop and flip: RandAugment
  ``rand-m9-mstd0.5-inc1`` (timm's ops, magnitude 9 with noise of std 0.5), on CPU threads
  that prepare the next batch while this one trains (:mod:`vicmae.engine.randaugment`);
- on the device: normalisation, RandomErasing (timm's, p 0.25, per-pixel noise), then
  Mixup 0.8 / CutMix 1.0 switching with p 0.5 and label smoothing 0.1 (timm's ``Mixup``
  and ``SoftTargetCrossEntropy``);
- AdamW (0.9, 0.999), weight decay 0.05 except norms, biases, class token and position
  embeddings, layer-wise lr decay 0.65 (timm's ``param_groups_layer_decay``), drop path
  0.1, warm-up then cosine per step, lr = base_lr x batch / 256;
- features from the class token after the final norm (``model.pool=mean``: the patch mean
  through a fresh LayerNorm, MAE's global pooling); learned position embeddings.

**Video** (``data.sampling=clip`` or ``segment``; the presets ``k400_vitb``... in
``vicmae/configs/``): the encoder becomes a space-time ViT over ``data.clip_frames``-frame
clips (:func:`vicmae.model.video_vit.inflate`, ``model.tubelet`` frames per token), its
temporal position table without weight decay and in the embeddings' layer-decay group, as
mae_st's ``models_vit.py``; dropout ``model.head_dropout`` before the head (mae_st). A
clip's RandAugment is one draw for all its frames, and RandomErasing and CutMix cut one
box through every frame (the clip viewed as ``(B, T*3, H, W)``: mae_st's "cube" erasing and
video MixUp; timm's on the 5-D batch would cut the wrong dimensions).

Validation after every epoch on one deterministic view (the centre crop; for clips the
centre clip), scored with the offset of the training file that has its classes
(:mod:`vicmae.engine.label_space`). Clips: the final weights are then tested on
``test.clips`` x ``test.crops`` views per video, softmax averaged (paper section 4;
``test_*`` figures). ``RUN/classifier.json`` records what ``vicmae eval`` needs.

Example::

    cfg = load_config(None, ["model.checkpoint=runs/k400/last.pt", "data.betons=[train.beton]",
                             "data.val_beton=val.beton"], cls=FinetuneConfig)
    result = finetune(cfg)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vicmae.config import (
    AugmentConfig,
    ConfigError,
    EvalDataConfig,
    FinetuneConfig,
    FinetuneModelConfig,
    parse_beton,
    to_dict,
)
from vicmae.config.resolve import CLIP_SAMPLERS
from vicmae.engine.batching import probe_step
from vicmae.engine.evaluation import (
    ClassifierEval,
    clip_input,
    encoder_features,
    image_input,
    load_encoder,
    multi_view_views,
)
from vicmae.engine.label_space import LabelSpace, label_space, write_record
from vicmae.engine.loop import Job, StepInfo, fit
from vicmae.engine.param_groups import build_optimizer
from vicmae.engine.randaugment import ClipRandAugment, RandAugmentLoader
from vicmae.engine.run_folder import write_json
from vicmae.engine.schedules import scaled_lr, warmup_cosine
from vicmae.engine.setup import start_run
from vicmae.model.video_vit import VideoViT, clips_from_loader, inflate
from vicmae.model.vit import ViTEncoder


class Classifier(nn.Module):
    """ViT encoder (or its video form) -> class token (or patch mean + LayerNorm) ->
    dropout -> Linear."""

    def __init__(
        self,
        encoder: ViTEncoder | VideoViT,
        num_classes: int,
        pool: str = "cls",
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pool = pool
        # The class token is already normed by the encoder's final norm (timm, the authors'
        # models_vit.py); the patch mean gets its own norm as MAE's global pooling does.
        self.fc_norm = nn.LayerNorm(encoder.embed_dim, eps=1e-6) if pool == "mean" else None
        # mae_st models_vit.py: dropout after the pooled feature's norm, before the head.
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        # The authors' image_finetune.py: trunc_normal_(head.weight, std=2e-5), bias 0.
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: images (N, 3, H, W) or clips (N, 3, T, H, W) -> logits (N, num_classes)."""
        f = encoder_features(self.encoder, x, self.pool)  # (N, D)
        f = self.fc_norm(f) if self.fc_norm is not None else f
        return self.head(self.head_drop(f))

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layers for timm's layer-wise lr decay: embeddings 0, block i at i + 1, and the
        final norm and head unmatched, hence last (full lr), as MAE's util/lr_decay.py
        (which the authors' image_finetune.py calls) assigns them. The video model's
        ``pos_embed_temporal`` and tubelet ``patch_embed`` are embeddings (layer 0), as
        mae_st's ``util/lr_decay.py`` puts every ``pos_embed*`` and ``patch_embed``."""
        return {
            "stem": r"^encoder\.(?:cls_token|pos_embed|patch_embed)",
            "blocks": [(r"^encoder\.blocks\.(\d+)", None)],
        }


def build_classifier(
    encoder: ViTEncoder, num_classes: int, m: FinetuneModelConfig, d: EvalDataConfig
) -> Classifier:
    """The model fine-tuned: the encoder (inflated to clips when ``d.sampling`` is a clip
    sampler) under a ``num_classes`` head. The encoder is used, not copied."""
    video = d.sampling in CLIP_SAMPLERS
    model = inflate(encoder, d.clip_frames, m.tubelet) if video else encoder
    return Classifier(model, num_classes, m.pool, m.head_dropout)


class FinetuneLoss:
    """normalise -> RandomErasing -> Mixup/CutMix -> loss, on the device, for images or clips.

    RandAugment ran before, on the loader's side (:class:`RandAugmentLoader`).
    """

    def __init__(self, aug: AugmentConfig, num_classes: int, device: torch.device, clips: bool):
        from timm.data import Mixup
        from timm.data.random_erasing import RandomErasing
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        self.device, self.clips = device, clips
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

    def augment(self, views: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised views (B, V, 3, H, W) -> erased, mixed (same shape) and the targets.

        timm's RandomErasing and Mixup take (B, C, H, W): the V views (a clip's frames, or
        one image) are viewed as B x (V*3) channels, so one erasing box and one CutMix box
        cut through every frame of a clip, as mae_st's "cube" erasing
        (``util/decoder/random_erasing.py``) and video MixUp (``util/decoder/mixup.py``:
        ``x[..., yl:yh, xl:xh]``) do; the noise is per pixel and frame, as in both.
        """
        b, v, c, h, w = views.shape
        x = views.reshape(b, v * c, h, w)  # a view of the same memory
        y = labels
        if self.erase is not None:
            x = self.erase(x)  # per sample, in place
        if self.mixup is not None:
            x, y = self.mixup(x, y)  # y: (B, num_classes) soft targets
        return x.view(b, v, c, h, w), y

    def __call__(self, model: nn.Module, batch: Any, at: StepInfo) -> tuple[Tensor, Tensor]:
        from vicmae_data import to_model_input

        views = to_model_input(batch, self.device, image_augment=False)  # (B, V, 3, H, W)
        x, y = self.augment(views, batch.labels.to(self.device).long())
        x = clips_from_loader(x) if self.clips else x[:, 0]  # (B, 3, T, H, W) / (B, 3, H, W)
        loss = self.criterion(model(x), y)
        return loss, loss.detach()[None]


def finetune(
    cfg: FinetuneConfig,
    *,
    resume: str | Path | bool | None = None,
    overwrite: bool = False,
    allow_changes: bool = False,
) -> dict[str, Any]:
    """Fine-tune, validate and (clips) test; return (and write as ``RUN/result.json``) the
    figures."""
    from timm.optim import param_groups_layer_decay

    if not cfg.data.betons:
        raise ValueError("no training .beton (data.betons is empty)")
    o, m, d = cfg.optim, cfg.model, cfg.data
    # The checkpoint, resolution and labels are checked before the run starts.
    torch.manual_seed(cfg.run.seed)  # a random-init encoder is the same on every rank
    encoder, res, arch = load_encoder(m, d.resolution, drop_path=m.drop_path)
    if m.learn_pos_embed:
        encoder.learn_pos_embed()
    space = label_space([parse_beton(b)[0] for b in d.betons])  # every training file's classes
    val_offset = space.offset_for(d.val_beton) if d.val_beton else 0
    clips = d.sampling in CLIP_SAMPLERS
    with start_run(cfg, "finetune", resume=resume, overwrite=overwrite,
                   allow_changes=allow_changes) as run:  # fmt: skip
        model = build_classifier(encoder, space.num_classes, m, d).to(run.device)
        if run.info.is_main:
            write_record(run.dir, record(cfg, arch, res, space))
        loss = FinetuneLoss(cfg.augment, space.num_classes, run.device, clips)
        pairs = 2 if loss.mixup is not None else 1  # mixup and cutmix mix pairs of samples
        views = d.clip_frames if clips else 1
        probe = probe_step(run, model, loss, views, res)
        micro, accum = run.micro_batching(model, probe, 8, pairs)
        if loss.mixup is not None and micro % 2:
            raise ConfigError(f"mixup/cutmix mix pairs of samples: micro-batch {micro} is odd")
        loader = run.loader(list(d.betons), micro, num_views=views, train=True, resolution=res)
        if cfg.augment.randaugment:  # on threads, for the next batch (module docstring)
            threads = cfg.augment.threads or d.num_workers
            augment = ClipRandAugment(cfg.augment.randaugment, res)
            loader = RandAugmentLoader(loader, augment, threads, cfg.run.seed + run.info.rank)
        spe = len(loader) // accum
        lr = warmup_cosine(scaled_lr(o.base_lr, o.batch_size), o.min_lr, o.epochs, spe,
                           o.warmup_epochs)  # fmt: skip
        groups = param_groups_layer_decay(
            model, o.weight_decay, NO_WEIGHT_DECAY,
            layer_decay=o.layer_decay if o.layer_decay is not None else 1.0,
        )  # fmt: skip
        model_input = clip_input if clips else image_input
        evaluate = None
        if d.val_beton:  # one deterministic view per epoch: the centre (clip and) crop
            evaluate = ClassifierEval(run, d.val_beton, res, micro, 1, model_input,
                                      offset=val_offset)  # fmt: skip
        job = Job(model, build_optimizer(groups, o, run.device), loader, micro, accum, loss, lr,
                  evaluate=evaluate, best=("val_top1", "max"), clip_grad=o.clip_grad)  # fmt: skip
        try:
            result = fit(run, job)
        finally:
            if isinstance(loader, RandAugmentLoader):
                loader.close()
        tested: dict[str, float] = {}
        if d.val_beton and cfg.test.clips * cfg.test.crops > 1:  # section 4: K x 3 views
            views_kj = multi_view_views(cfg.test.clips, cfg.test.crops)
            test = ClassifierEval(run, d.val_beton, res, micro, views_kj, model_input,
                                  offset=val_offset, prefix="test_")  # fmt: skip
            tested = test(model, result.epoch)
        out = {
            **result.val_metrics, **tested, "best": result.best, "step": result.step,
            "num_classes": space.num_classes, "arch": arch, "resolution": res,
            "checkpoint": m.checkpoint, "test_views": [cfg.test.clips, cfg.test.crops],
            "label_offsets": [f.offset for f in space.files], "config": to_dict(cfg),
        }  # fmt: skip
        if run.info.is_main:
            out["out"] = str(write_json(run.dir / "result.json", out))
        return out


# Exempt from weight decay (with every 1-D tensor): the class token and the position tables,
# the temporal one included (mae_st models_vit.py no_weight_decay; timm's grouping decays
# any tensor of 2+ dimensions not named here).
NO_WEIGHT_DECAY = ("encoder.cls_token", "encoder.pos_embed", "encoder.pos_embed_temporal")


def record(cfg: FinetuneConfig, arch: str, res: int, space: LabelSpace) -> dict[str, Any]:
    """``RUN/classifier.json`` of a fine-tune: how ``vicmae eval`` rebuilds the model."""
    m, d = cfg.model, cfg.data
    video = None
    if d.sampling in CLIP_SAMPLERS:
        video = {"sampling": d.sampling, "frames": d.clip_frames, "stride": d.clip_stride,
                 "tubelet": m.tubelet}  # fmt: skip
    return {
        "job": "finetune", "arch": arch, "resolution": res, "pool": m.pool,
        "head_dropout": m.head_dropout, "num_classes": space.num_classes, "video": video,
        "labels": space.to_dict(),
    }  # fmt: skip
