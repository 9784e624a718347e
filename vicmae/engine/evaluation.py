"""What the two evaluation jobs share: the encoder they start from, class counts, accuracy.

- :func:`load_encoder` builds the pretrained encoder alone (no decoder, no projector) from a
  checkpoint's own config (safe loading), at the requested resolution, checking the
  architecture, and loads the encoder's weights only;
- :func:`count_classes` checks every label of the training and validation files against
  their stored class lists and gives the head's width;
- :class:`ViewAverager` averages the softmax of every sample over the views it was seen in,
  by its index in the file (views arrive as separate passes, each batch carrying
  ``batch.indices``), and scores the averaged predictions per sample (per video);
- :class:`EvalView` is one such pass: the loader arguments that pick its view;
  :func:`augmented_views` is today's ``augment.test_views``, :func:`multi_view_views` the
  paper's K x 3 testing (section 4);
- :class:`ClassifierEval` is the per-epoch validation: every validation sample exactly once
  per pass (sharded across ranks, gathered by sample index), softmax averaged over the
  passes, top-1 (and top-5 when there are more than 5 classes), mean per-class accuracy and
  the loss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 (torch's convention)
from torch import Tensor, nn

from vicmae.config import ConfigError, EvalModelConfig, check_resolution
from vicmae.engine.checkpoint import load_checkpoint, model_state
from vicmae.engine.setup import Run
from vicmae.model.vicmae import ModelConfig
from vicmae.model.video_vit import clips_from_loader
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


def count_classes(train: str | Sequence[str], val: str | None) -> int:
    """The head's width: the classes of the training file(s), every label checked first.

    Each file's labels are checked against the class list stored in it
    (:func:`vicmae_data.check_labels`: the first bad sample named in one line; a split
    without labels refused), so no head is ever sized from a damaged label. Several
    training files: the label spaces the loader gives them (shards keep their labels,
    other datasets are offset past each other). The validation file must label its
    classes as the (first) training file does.
    """
    from vicmae_data import check_labels, check_same_classes
    from vicmae_data.format.labels import plan_labels

    paths = [train] if isinstance(train, str) else list(train)
    sizes = [check_labels(p) for p in paths]
    top = sizes[0]
    if len(paths) > 1:
        offsets = plan_labels(paths).offsets  # as make_loader offsets them
        top = max(o + n for o, n in zip(offsets, sizes, strict=True))
    if val is not None:
        val_top = check_labels(val)
        check_same_classes(paths[0], val)  # ClassMapError (one line) when they disagree
        if val_top > top:
            raise ConfigError(
                f"{val} has label {val_top - 1}, but {paths[0]} only labels 0..{top - 1}"
            )
    return top


def accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """Top-k accuracies in percent (k capped at the number of classes)."""
    out = []
    for k in ks:
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (n, k)
        out.append(100.0 * (top == labels[:, None]).any(dim=1).float().mean().item())
    return out


def mean_class_accuracy(scores: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of each class, averaged over the classes present in ``labels``, in %.

    The figure reported for FGVC Aircraft, Oxford-IIIT Pets, Caltech-101 and Oxford
    Flowers in transfer tables like the paper's Table 2 (the convention of Kornblith et al.
    2019, "Do Better ImageNet Models Transfer Better?"; issue 17 item 6). Equals top-1 when
    every class has as many samples; a class with no sample here is left out, not counted
    as 0. Left out: VOC2007's 11-point mAP, the same convention's figure for VOC, a
    multi-label score that our single-label files cannot feed.
    """
    pred = scores.topk(1, dim=1).indices[:, 0]  # (n,) the same pick as top-1's
    classes = scores.shape[1]
    hits = torch.zeros(classes, dtype=torch.float64, device=scores.device)
    hits.index_add_(0, labels, (pred == labels).double())  # (C,) right answers per class
    counts = torch.bincount(labels, minlength=classes).double()  # (C,) samples per class
    present = counts > 0
    return 100.0 * (hits[present] / counts[present]).mean().item()


def classification_metrics(probs: Tensor, labels: Tensor, prefix: str = "val_") -> dict:
    """``top1``, ``top5`` (only with more than 5 classes), ``mean_class_acc``, ``loss`` (NLL
    of ``probs``) and ``samples``, each key with ``prefix``."""
    ks = (1, 5) if probs.shape[1] > 5 else (1,)
    accs = accuracy(probs, labels, ks)
    out = {f"{prefix}top{k}": a for k, a in zip(ks, accs, strict=True)}
    out[f"{prefix}mean_class_acc"] = mean_class_accuracy(probs, labels)
    nll = F.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return {**out, f"{prefix}loss": nll, f"{prefix}samples": len(labels)}


class ViewAverager:
    """The softmax of every sample averaged over its views, by the sample's index in the file.

    Paper section 4: "taking K temporal clips ... and for each clip taking 3 spatial views
    ... The final prediction is the average of all views." Views arrive as separate passes
    over the file; each batch carries ``batch.indices``, so a sample's views meet here
    whatever the batch, pass or rank that produced them. Example::

        avg = ViewAverager(len(BetonFile(val)), device)
        for view in multi_view_views(7, 3):            # one pass per view
            for batch in loader_for(view):
                avg.add(batch.indices, model(x), batch.labels)
        avg.all_reduce()                                # under torchrun
        metrics = avg.metrics()                         # per video: top-1, top-5, ...
    """

    def __init__(self, num_samples: int, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.num_samples = num_samples
        self.prob_sum: Tensor | None = None  # (n, C), made at the first batch
        self.counts = torch.zeros(num_samples, device=self.device)  # views seen per sample
        self.labels = torch.full((num_samples,), -1, dtype=torch.long, device=self.device)

    def add(self, indices: Tensor, logits: Tensor, labels: Tensor) -> None:
        """One batch of one view: ``indices`` (B,) in the file, ``logits`` (B, C), labels (B,)."""
        p = logits.detach().float().softmax(dim=1)  # (B, C)
        if self.prob_sum is None:
            self.prob_sum = torch.zeros(self.num_samples, p.shape[1], device=self.device)
        idx = indices.to(self.device).long()  # (B,)
        self.prob_sum.index_add_(0, idx, p.to(self.device))
        self.counts.index_add_(0, idx, torch.ones_like(idx, dtype=self.counts.dtype))
        self.labels[idx] = labels.to(self.device).long()

    def all_reduce(self) -> None:
        """Sum every rank's views (each rank saw its share of every pass)."""
        if self.prob_sum is None:
            raise RuntimeError("all_reduce before any batch: every rank must add one")
        dist.all_reduce(self.prob_sum)
        dist.all_reduce(self.counts)
        dist.all_reduce(self.labels, op=dist.ReduceOp.MAX)

    def averaged(self) -> tuple[Tensor, Tensor]:
        """(probs (m, C), labels (m,)): the mean softmax of each of the m samples seen."""
        if self.prob_sum is None:
            raise ValueError("no samples were seen")
        seen = self.counts > 0
        return self.prob_sum[seen] / self.counts[seen, None], self.labels[seen]

    def metrics(self, prefix: str = "val_") -> dict:
        """:func:`classification_metrics` of the averaged predictions: one row per sample."""
        return classification_metrics(*self.averaged(), prefix=prefix)


@dataclass(frozen=True)
class EvalView:
    """One validation pass over the file, as the loader arguments that pick its view.

    ``test_view=(k, K, j, J)``: temporal clip k of K, spatial crop j of J, deterministic
    (``make_loader(..., train=False, test_view=...)``, clip loading). ``train=True``: a
    training-augmented view drawn by loader epoch ``epoch``.
    """

    train: bool = False
    epoch: int = 0
    test_view: tuple[int, int, int, int] | None = None

    def loader_kwargs(self) -> dict[str, Any]:
        """What the loader is built with for this pass (``test_view`` only when set)."""
        kw: dict[str, Any] = {"train": self.train}
        if self.test_view is not None:
            kw["test_view"] = self.test_view
        return kw


def augmented_views(n: int) -> tuple[EvalView, ...]:
    """``augment.test_views=n`` as it is today: the centre view, then ``n - 1`` views drawn
    by the training transform (loader epochs 1 .. n-1)."""
    if n < 1:
        raise ValueError(f"need at least one view, got {n}")
    return (EvalView(), *(EvalView(train=True, epoch=k) for k in range(1, n)))


def multi_view_views(clips: int, crops: int = 3) -> tuple[EvalView, ...]:
    """Paper section 4's ``K x 3`` testing: each of ``clips`` temporal clips (K = 7 on
    Kinetics) at each of ``crops`` spatial crops, all deterministic."""
    if clips < 1 or crops < 1:
        raise ValueError(f"need at least one clip and one crop, got {clips} x {crops}")
    return tuple(
        EvalView(test_view=(k, clips, j, crops)) for k in range(clips) for j in range(crops)
    )


def image_input(batch: Any, device: torch.device) -> Tensor:
    """A batch's first view, normalised: (B, 3, H, W), what the image classifier takes."""
    from vicmae_data import to_model_input

    return to_model_input(batch, device, image_augment=False)[:, 0]


def clip_input(batch: Any, device: torch.device) -> Tensor:
    """A batch of clips (views (B, T, 3, H, W)), normalised: (B, 3, T, H, W) for VideoViT."""
    from vicmae_data import to_model_input

    return clips_from_loader(to_model_input(batch, device, image_augment=False))


class ClassifierEval:
    """``evaluate(model, epoch) -> {"val_top1", ["val_top5"], "val_mean_class_acc",
    "val_loss", "val_samples"}``.

    ``views``: the passes, explicit (e.g. :func:`multi_view_views`), or an int ``n`` for
    :func:`augmented_views` (pass 0 the centre view, passes k > 0 training-augmented).
    ``model_input`` turns a batch into what the model takes (:func:`image_input`, or
    :func:`clip_input` for the video model). Every rank evaluates its share; the softmax of
    each sample is averaged over its views by its index in the file (:class:`ViewAverager`),
    so padding and ranks never count a sample twice. ``offset`` is added to the file's
    labels (where its dataset's classes sit in the head:
    :meth:`vicmae.engine.label_space.LabelSpace.offset_for`); ``prefix`` starts every key
    (``"test_"`` for the final K x J test).
    """

    def __init__(
        self,
        run: Run,
        beton: str,
        resolution: int,
        batch: int,
        views: int | Sequence[EvalView] = 1,
        model_input: Callable[[Any, torch.device], Tensor] = image_input,
        *,
        offset: int = 0,
        prefix: str = "val_",
    ) -> None:
        self.run, self.beton, self.res = run, beton, resolution
        self.batch, self.model_input = batch, model_input
        self.offset, self.prefix = offset, prefix
        self.views = augmented_views(views) if isinstance(views, int) else tuple(views)
        if not self.views:
            raise ValueError("no evaluation views")
        self._loaders: dict[bool, Any] = {}

    def _loader(self, view: EvalView) -> Any:
        """The loader of one pass. Centre and augmented passes keep theirs across epochs; a
        test view's is built per pass (K x 3 of them would each hold their buffers)."""
        kw = dict(num_views=1, resolution=self.res, drop_last=False, **view.loader_kwargs())
        kw["relabel"] = [self.offset]  # the head's labels (LabelSpace.offset_for)
        if view.test_view is not None:
            return self.run.loader(self.beton, self.batch, **kw)
        if view.train not in self._loaders:
            self._loaders[view.train] = self.run.loader(self.beton, self.batch, **kw)
        return self._loaders[view.train]

    @torch.no_grad()
    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        from vicmae_data import BetonFile

        device = self.run.device
        was_training = model.training
        model.eval()
        averager = ViewAverager(len(BetonFile(self.beton)), device)
        for view in self.views:
            loader = self._loader(view)
            loader.set_epoch(view.epoch)
            batches = iter(loader)
            try:
                for batch in batches:
                    x = self.model_input(batch, device)  # (B, 3, H, W) or (B, 3, T, H, W)
                    with self.run.autocast():
                        logits = model(x)  # (B, C)
                    averager.add(batch.indices, logits, batch.labels)
            finally:
                batches.close()
        if averager.prob_sum is None:
            raise ValueError(f"{self.beton}: no samples")
        if self.run.info.distributed:
            averager.all_reduce()
        model.train(was_training)
        return averager.metrics(self.prefix)
