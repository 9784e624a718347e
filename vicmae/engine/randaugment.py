"""RandAugment for fine-tuning, off the training step's critical path, the same for every
frame of a clip.

Table 6 fine-tunes with "RandAug (9, 0.5)", which the authors' ``image_finetune.py`` runs
as timm's ``rand-m9-mstd0.5-inc1``: per sample, in PIL, on the CPU (~1.2 ms per 224 image on
one core: ~150 ms for a 128-image micro-batch, against ~35 ms for a ViT-B step on an H100).
Run inside the step it would idle the GPU most of the time; so :class:`RandAugmentLoader`
applies it to batch n+1 on a thread pool while batch n trains (PIL's ops release the GIL),
and the step only ever waits for what the pool has not finished
(``benchmarks/bench_finetune_step.py`` measures it). Batching it on the device was the
alternative: timm has no batched per-sample RandAugment, and torchvision's applies one op
to a whole batch, which is not the per-sample augmentation the recipe uses.

:class:`ClipRandAugment` is timm's RandAugment (its op functions, its op lists, its config
string) with three changes:

- every random draw comes from the sample's own generator, seeded from (run seed, epoch,
  file, sample index): the threads then never share a random stream, and a resumed run
  draws what the uninterrupted one did (timm draws from the ``random`` and ``numpy``
  module streams the training thread also uses);
- one draw per sample, applied to every frame of a clip, as facebookresearch/mae_st's
  ``util/decoder/rand_augment.py`` does (its ``AugmentOp`` applies one op and magnitude to
  the whole frame list);
- posterize to 0 bits gives a black image instead of Pillow 13's ValueError
  (:func:`_no_bits`).

The level functions (magnitude -> op argument) are restated here because timm's draw their
sign from the ``random`` module; ``tests/test_randaugment.py`` checks them against timm's
``LEVEL_TO_ARG`` for every op and magnitude. Where mae_st applies RandAugment to the whole
decoded frame before its random crop, here it follows the loader's crop, as timm's image
transform does (crop, flip, then RandAugment).
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

__all__ = ["ClipRandAugment", "RandAugmentLoader"]

_LEVEL_DENOM = 10.0  # timm auto_augment: magnitudes are out of 10


def _level_args(name: str, m: float, hparams: dict[str, Any], negate: bool) -> tuple:
    """timm's LEVEL_TO_ARG[name](m) with the sign given (timm: ``random.random() > 0.5``)."""
    sign = -1.0 if negate else 1.0
    f = m / _LEVEL_DENOM
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if name == "Rotate":
        return (sign * f * 30.0,)
    if name in ("ShearX", "ShearY"):
        return (sign * f * 0.3,)
    if name in ("TranslateXRel", "TranslateYRel"):
        return (sign * f * hparams.get("translate_pct", 0.45),)
    if name == "Posterize":
        return (int(f * 4),)
    if name == "PosterizeIncreasing":
        return (4 - int(f * 4),)
    if name == "Solarize":
        return (min(256, int(f * 256)),)
    if name == "SolarizeIncreasing":
        return (256 - min(256, int(f * 256)),)
    if name == "SolarizeAdd":
        return (min(128, int(f * 110)),)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (f * 1.8 + 0.1,)
    if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                "SharpnessIncreasing"):  # fmt: skip
        return (max(0.1, 1.0 + sign * f * 0.9),)
    raise ValueError(f"RandAugment op {name!r} is not supported here")


def _no_bits(img: Any, bits: int, **_: Any) -> Any:
    """Posterize keeping 0 bits: a black image. timm 1.0's ``posterize`` hands Pillow 0 bits
    at magnitude 10 (``PosterizeIncreasing``; reached with ``mstd`` noise), which Pillow 13
    refuses with a ValueError (timm's own RandAugment fails ~2 in 1,000 images here); older
    Pillow masked every bit away, which this reproduces."""
    from PIL import Image

    return Image.new(img.mode, img.size, 0)


NEGATED = frozenset(
    ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing",
     "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing")
)  # fmt: skip
"""The ops whose timm level function negates its value with probability 1/2."""


class ClipRandAugment:
    """timm's RandAugment ``config`` (e.g. ``rand-m9-mstd0.5-inc1``) for ``resolution``-sized
    views, drawn per sample from ``seed`` and applied alike to each of its frames.

    ``hparams`` as timm's ``create_transform`` sets them for this input size (translation
    by 45% of the side, fill with the ImageNet mean).
    """

    def __init__(self, config: str, resolution: int) -> None:
        from timm.data import rand_augment_transform

        from vicmae_data.load.augment import IMAGENET_MEAN

        mean = tuple(round(255 * m) for m in IMAGENET_MEAN)
        self.hparams = {"translate_const": int(resolution * 0.45), "img_mean": mean}
        ra = rand_augment_transform(config, dict(self.hparams))  # parses the string
        self.ops = list(ra.ops)
        for op in self.ops:
            _level_args(op.name, 0.0, op.hparams, False)  # unsupported ops fail here
        self.num_layers = ra.num_layers
        self.weights = ra.choice_weights

    def draw(self, seed: tuple[int, ...]) -> list[tuple[Any, tuple, dict[str, Any]]]:
        """The ops one sample gets: ``[(op function, args, kwargs), ...]`` (timm's
        ``RandAugment.__call__`` and ``AugmentOp.__call__``, from this sample's generator)."""
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(self.ops), self.num_layers, replace=self.weights is None,
                            p=self.weights)  # fmt: skip
        out = []
        for i in picked.tolist():
            op = self.ops[i]
            if op.prob < 1.0 and rng.random() > op.prob:
                continue
            m = op.magnitude
            if op.magnitude_std == math.inf:
                m = rng.uniform(0, m)
            elif op.magnitude_std > 0:
                m = rng.normal(m, op.magnitude_std)
            m = max(0.0, min(m, op.magnitude_max or _LEVEL_DENOM))
            negate = op.name in NEGATED and rng.random() > 0.5
            kwargs = dict(op.kwargs)
            if isinstance(kwargs.get("resample"), list | tuple):  # timm: random.choice
                kwargs["resample"] = kwargs["resample"][rng.integers(len(kwargs["resample"]))]
            args = _level_args(op.name, m, op.hparams, negate)
            fn = _no_bits if op.name.startswith("Posterize") and args[0] <= 0 else op.aug_fn
            out.append((fn, args, kwargs))
        return out

    def __call__(self, frames: np.ndarray, seed: tuple[int, ...]) -> np.ndarray:
        """frames: uint8 (T, H, W, 3), one sample's -> the same, augmented alike."""
        from PIL import Image

        ops = self.draw(seed)
        if not ops:
            return frames
        out = np.empty_like(frames)
        for t, frame in enumerate(frames):
            img = Image.fromarray(frame)
            for fn, args, kwargs in ops:
                img = fn(img, *args, **dict(kwargs))  # timm's ops pop from their kwargs
            out[t] = np.asarray(img)
        return out


class RandAugmentLoader:
    """A loader whose batches come through :class:`ClipRandAugment`, computed on ``threads``
    threads for the next batch while the current one trains.

    Behaves as the loader it wraps (``len``, ``set_epoch``, ``epoch``; other attributes
    are the loader's). Sample ``i`` of file ``f`` in epoch ``e`` is augmented from seed
    ``(seed, e, f, i)`` whatever the batch, thread or restart. Batches are new tensors
    (the loader's reused buffers are read only while the next batch is prepared).
    """

    def __init__(self, loader: Any, augment: ClipRandAugment, threads: int, seed: int) -> None:
        self.loader, self.augment, self.seed = loader, augment, int(seed)
        self.threads = max(1, int(threads))
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["loader"], name)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def _augment_rows(self, batch: Any, out: np.ndarray, rows: range, epoch: int) -> None:
        views = batch.views.permute(0, 1, 3, 4, 2)  # (B, V, H, W, 3)
        for b in rows:
            key = (self.seed, epoch, int(batch.files[b]), int(batch.indices[b]))
            out[b] = self.augment(views[b].numpy(), key)

    def _submit(self, batch: Any, epoch: int) -> tuple[Any, np.ndarray, list[Future]]:
        b, v, c, h, w = batch.views.shape
        out = np.empty((b, v, h, w, c), dtype=np.uint8)
        step = -(-b // self.threads)
        assert self._pool is not None
        jobs = [
            self._pool.submit(self._augment_rows, batch, out, range(i, min(i + step, b)), epoch)
            for i in range(0, b, step)
        ]
        return batch, out, jobs

    @staticmethod
    def _collect(pending: tuple[Any, np.ndarray, list[Future]]) -> Any:
        batch, out, jobs = pending
        for job in jobs:
            job.result()  # re-raises a worker's error here
        views = torch.from_numpy(out).permute(0, 1, 4, 2, 3)  # (B, V, 3, H, W)
        rest = {k: getattr(batch, k).clone() for k in ("labels", "is_image", "indices", "files")}
        return batch._replace(views=views, **rest)

    def __iter__(self) -> Any:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="randaugment")
        epoch = int(self.loader.epoch)
        it = iter(self.loader)
        pending = None
        try:
            for batch in it:
                nxt = self._submit(batch, epoch)  # starts now, while `pending` trains
                if pending is not None:
                    yield self._collect(pending)
                pending = nxt
            if pending is not None:
                yield self._collect(pending)
        finally:
            if pending is not None:
                for job in pending[2]:
                    job.cancel()
                    if not job.cancelled():
                        job.exception()  # never leave a thread writing into a dropped batch
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        """Stop the threads (they also stop at interpreter exit)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
