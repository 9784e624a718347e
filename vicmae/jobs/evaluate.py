"""``vicmae eval``: score a fine-tuned (or linear-probe) checkpoint on a labelled .beton.

The model is rebuilt from the checkpoint and the run's ``classifier.json`` (architecture,
input size, head, video settings, the label space it was trained on); the file's labels
must be one training file's classes, and are offset as that file's were in training
(:mod:`vicmae.engine.label_space`). A video model is tested as the paper's section 4 says:
every video as K temporal clips x J spatial crops (the run's ``test.clips`` x
``test.crops``, or ``clips``/``crops`` here), the softmax averaged over all views, top-1,
top-5 and mean per-class accuracy per video. An image model sees the centre crop.

Example::

    result = evaluate("runs/k400/finetune/last.pt", "k400-val.beton", clips=7, crops=3)
    result["test_top1"]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vicmae.config import ConfigError, FinetuneConfig, LinprobeConfig, load_config
from vicmae.config.resolve import CLIP_SAMPLERS
from vicmae.distributed import setup_distributed, teardown_distributed
from vicmae.engine.checkpoint import load_checkpoint, model_state
from vicmae.engine.evaluation import ClassifierEval, clip_input, image_input, multi_view_views
from vicmae.engine.label_space import LabelSpace, read_record
from vicmae.engine.setup import Run
from vicmae.model.vit import ViTEncoder


def evaluate(
    checkpoint: str | os.PathLike,
    beton: str | os.PathLike,
    *,
    clips: int | None = None,
    crops: int | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    device: str = "auto",
) -> dict[str, Any]:
    """``test_top1``, ``test_top5`` (more than 5 classes), ``test_mean_class_acc``,
    ``test_loss``, ``test_samples`` of ``checkpoint`` on ``beton``, and what was run.

    ``clips`` x ``crops``: the views per video (default: the run's ``test`` section; only
    for a video model). Under ``torchrun`` every rank scores its share.
    """
    state = load_checkpoint(checkpoint)
    kind = state.get("kind")
    if kind not in ("finetune", "linprobe") or not isinstance(state.get("config"), dict):
        raise ConfigError(
            f"{checkpoint}: a {kind or 'plain'} checkpoint; `vicmae eval` scores a fine-tune "
            "or linear-probe checkpoint (`vicmae train linprobe` evaluates a pretraining one)"
        )
    record = read_record(checkpoint)
    cls = FinetuneConfig if kind == "finetune" else LinprobeConfig
    overrides = [f"data.num_workers={num_workers}", f"run.device={device}",
                 "run.progress=false"]  # fmt: skip
    if kind == "finetune":
        overrides += [f"test.clips={clips}"] if clips is not None else []
        overrides += [f"test.crops={crops}"] if crops is not None else []
    elif clips is not None or crops is not None:
        raise ConfigError("--clips/--crops test the video model; a probe sees the centre crop")
    cfg = load_config(None, overrides, cls=cls, base=state["config"])
    offset = LabelSpace.from_dict(record["labels"]).offset_for(beton)
    video = cfg.data.sampling in CLIP_SAMPLERS
    views = multi_view_views(cfg.test.clips, cfg.test.crops) if video else 1

    joined = not torch.distributed.is_initialized()
    info = setup_distributed(cfg.run.device)
    try:
        model = _rebuild(record, cfg, kind).to(info.device)
        model.load_state_dict(model_state(state))
        precision = "bf16" if info.device.type == "cuda" else "fp32"
        run = Run("eval", cfg, info, Path(checkpoint).parent, None, None, precision)
        test = ClassifierEval(run, str(beton), record["resolution"], batch_size, views,
                              clip_input if video else image_input, offset=offset,
                              prefix="test_")  # fmt: skip
        metrics = test(model, 0)
    finally:
        if joined and torch.distributed.is_initialized():
            teardown_distributed()
    return {
        **metrics, "views": [cfg.test.clips, cfg.test.crops] if video else [1, 1],
        "checkpoint": str(checkpoint), "beton": str(beton), "label_offset": offset,
        "num_classes": record["num_classes"], "arch": record["arch"], "job": kind,
    }  # fmt: skip


def _rebuild(record: dict[str, Any], cfg: FinetuneConfig | LinprobeConfig, kind: str) -> nn.Module:
    """The trained model's modules, as its job built them (weights loaded after)."""
    encoder = ViTEncoder.from_arch(record["arch"], record["resolution"])
    if kind == "linprobe":
        from vicmae.jobs.linprobe import LinearProbe

        return LinearProbe(encoder, record["num_classes"], record["pool"])
    from vicmae.jobs.finetune import build_classifier

    if cfg.model.learn_pos_embed:
        encoder.learn_pos_embed()
    return build_classifier(encoder, record["num_classes"], cfg.model, cfg.data)
