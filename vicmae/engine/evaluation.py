"""What the two evaluation jobs share: the encoder they start from, class counts, accuracy.

- :func:`load_encoder` builds the pretrained encoder alone (no decoder, no projector) from a
  checkpoint's own config (safe loading), at the requested resolution, checking the
  architecture, and loads the encoder's weights only;
- :func:`count_classes` reads the label columns of the training and validation files;
- :class:`ClassifierEval` is the per-epoch validation: every validation sample exactly once
  (sharded across ranks, gathered by sample index), softmax averaged over K passes,
  top-1 (and top-5 when there are more than 5 classes) and the loss.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 (torch's convention)
from torch import Tensor, nn

from vicmae.config import ConfigError, EvalModelConfig, check_resolution
from vicmae.engine.checkpoint import load_checkpoint, model_state
from vicmae.engine.setup import Run
from vicmae.model.vicmae import ModelConfig
from vicmae.model.vit import ViTEncoder

log = logging.getLogger("vicmae")


class PretrainedEncoder(NamedTuple):
    """What :func:`load_encoder` returns: ``encoder, resolution, arch = load_encoder(...)``."""

    encoder: ViTEncoder
    resolution: int  # the input side the encoder was built for
    arch: str  # the architecture's name (the checkpoint's, or model.arch)


def load_encoder(
    mcfg: EvalModelConfig, resolution: int | None, drop_path: float = 0.0
) -> PretrainedEncoder:
    """The encoder alone, with the checkpoint's encoder weights unless ``random_init``.

    ``resolution`` None: the checkpoint's input size (position tables are resampled on
    load for another one). The decoder and projector in the checkpoint are not built.
    """
    state = load_checkpoint(mcfg.checkpoint) if mcfg.checkpoint else None
    if state is not None and isinstance(state.get("config"), dict) and "model" in state["config"]:
        if state.get("kind", "pretrain") != "pretrain":
            raise ConfigError(
                f"{mcfg.checkpoint}: a {state['kind']} checkpoint; evaluations start from a "
                "pretraining checkpoint"
            )
        saved = ModelConfig.from_dict(dict(state["config"]["model"]))
        if mcfg.arch is not None and mcfg.arch != saved.arch:
            raise ConfigError(
                f"model.arch={mcfg.arch} but {mcfg.checkpoint} holds a {saved.arch} encoder"
            )
    elif mcfg.arch is not None:
        saved = ModelConfig(arch=mcfg.arch)
    elif state is not None:
        raise ConfigError(f"{mcfg.checkpoint}: holds no config; pass model.arch=... (--arch)")
    else:
        raise ConfigError("pass --checkpoint CKPT (or --random-init / --arch ARCH)")
    res = saved.img_size if resolution is None else resolution
    check_resolution(res, saved.arch, "data.resolution")
    encoder = ViTEncoder.from_arch(saved.arch, res, drop_path)
    if state is not None and not mcfg.random_init:
        prefix = "encoder."
        weights = {
            k[len(prefix) :]: v for k, v in model_state(state).items() if k.startswith(prefix)
        }
        try:
            encoder.load_state_dict(weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1].strip()
            raise ConfigError(
                f"{mcfg.checkpoint}: weights do not fit its config ({first})"
            ) from None
    return PretrainedEncoder(encoder, res, saved.arch)


def encoder_features(encoder: nn.Module, imgs: Tensor, pool: str) -> Tensor:
    """imgs (N, 3, H, W) -> (N, D): the class token (paper, appendix A) or the patch mean."""
    x = encoder.forward_features(imgs)  # (N, 1+L, D), after the final norm
    return x[:, 0] if pool == "cls" else x[:, 1:].mean(dim=1)


def count_classes(train: str, val: str | None) -> int:
    """The head's width: the dataset's class list (stored in the file), at least the largest
    label + 1. The validation file must label its classes as the training file does."""
    from vicmae_data import BetonFile, check_same_classes, class_names

    top = max(len(class_names(train)), int(BetonFile(train).labels.max()) + 1)
    if val is not None:
        check_same_classes(train, val)  # ClassMapError (one line) when they disagree
        val_top = int(BetonFile(val).labels.max()) + 1
        if val_top > top:
            raise ConfigError(
                f"{val} has label {val_top - 1}, but {train} only labels 0..{top - 1}"
            )
    return top


def accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """Top-k accuracies in percent (k capped at the number of classes)."""
    out = []
    for k in ks:
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (n, k)
        out.append(100.0 * (top == labels[:, None]).any(dim=1).float().mean().item())
    return out


def classification_metrics(probs: Tensor, labels: Tensor, prefix: str = "val_") -> dict:
    """``top1``, ``top5`` (only with more than 5 classes) and ``loss`` (NLL of ``probs``)."""
    ks = (1, 5) if probs.shape[1] > 5 else (1,)
    accs = accuracy(probs, labels, ks)
    out = {f"{prefix}top{k}": a for k, a in zip(ks, accs, strict=True)}
    nll = F.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return {**out, f"{prefix}loss": nll, f"{prefix}samples": len(labels)}


class ClassifierEval:
    """``evaluate(model, epoch) -> {"val_top1", ["val_top5"], "val_loss", "val_samples"}``.

    Pass 0 is the centre view; passes k > 0 (``views`` > 1) draw other frames and crops with
    the training transform for "epoch" k. Every rank evaluates its share; the softmax of
    each sample is summed by its index in the file and all-reduced, so padding and ranks
    never count a sample twice.
    """

    def __init__(self, run: Run, beton: str, resolution: int, batch: int, views: int = 1) -> None:
        self.run, self.beton, self.res = run, beton, resolution
        self.batch, self.views = batch, views
        self._loaders: dict[bool, Any] = {}

    def _loader(self, train: bool) -> Any:
        if train not in self._loaders:
            self._loaders[train] = self.run.loader(
                self.beton, self.batch, num_views=1, train=train, resolution=self.res,
                drop_last=False,
            )  # fmt: skip
        return self._loaders[train]

    @torch.no_grad()
    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        from vicmae_data import BetonFile, to_model_input

        device = self.run.device
        was_training = model.training
        model.eval()
        n = len(BetonFile(self.beton))
        probs: Tensor | None = None
        counts = torch.zeros(n, device=device)
        labels = torch.full((n,), -1, dtype=torch.long, device=device)
        for k in range(self.views):
            loader = self._loader(train=k > 0)
            loader.set_epoch(k)
            batches = iter(loader)
            try:
                for batch in batches:
                    x = to_model_input(batch, device, image_augment=False)[:, 0]  # (B, 3, H, W)
                    with self.run.autocast():
                        p = model(x).float().softmax(dim=1)  # (B, C)
                    if probs is None:
                        probs = torch.zeros(n, p.shape[1], device=device)
                    idx = batch.indices.to(device).long()  # each row's index in the file
                    probs.index_add_(0, idx, p)
                    counts.index_add_(0, idx, torch.ones_like(idx, dtype=counts.dtype))
                    labels[idx] = batch.labels.to(device).long()
            finally:
                batches.close()
        assert probs is not None, f"{self.beton}: no samples"
        if self.run.info.distributed:
            dist.all_reduce(probs)
            dist.all_reduce(counts)
            dist.all_reduce(labels, op=dist.ReduceOp.MAX)
        seen = counts > 0
        model.train(was_training)
        return classification_metrics(probs[seen] / counts[seen, None], labels[seen])
