"""Per-view crop and flip parameters, drawn in numba inside the loader's compiled decoder.

The loader's compiled decoder calls :func:`draw_view_params` once per sample; it is a plain
``@njit`` function of (seed, epoch, sample index, frame count, frame size, settings), so
tests and users can reproduce exactly which frames, crops and flips a sample got.

Per view, ``params[v]`` holds ``(frame, top, left, height, width, flip)``:

- ``frame`` from the sampler (:mod:`vicmae_data.load.samplers`);
- a random resized crop as torchvision draws it (area fraction in ``scale``, log-uniform
  aspect ratio in ``ratio``, ten tries then a centre crop), with ``top`` and ``left``
  rounded down to even numbers because libwebp snaps its crop origin to even pixels;
- ``flip`` = 1 with probability 1/2.

With ``train=False``: the centre frame(s), a centred square crop of ``center_fraction``
of the short side (224/256 by default, the usual evaluation crop), no flip.

The model-side image augmentation (colour jitter, grayscale, blur, solarisation) runs later,
in torch, on the decoded batch: :mod:`vicmae_data.load.augment`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from vicmae_data.load.samplers import rng_init, rng_int, rng_uniform, sample_frames

PARAM_COLUMNS = ("frame", "top", "left", "height", "width", "flip")


@njit(cache=True)
def random_resized_crop(
    H: int,
    W: int,
    scale_lo: float,
    scale_hi: float,
    ratio_lo: float,
    ratio_hi: float,
    rng: np.ndarray,
    out: np.ndarray,
) -> None:
    """torchvision's RandomResizedCrop parameters -> ``out[:4] = top, left, height, width``."""
    area = H * W
    log_lo = math.log(ratio_lo)
    log_hi = math.log(ratio_hi)
    for _ in range(10):
        target = area * (scale_lo + (scale_hi - scale_lo) * rng_uniform(rng))
        aspect = math.exp(log_lo + (log_hi - log_lo) * rng_uniform(rng))
        w = int(math.sqrt(target * aspect) + 0.5)
        h = int(math.sqrt(target / aspect) + 0.5)
        if 0 < w <= W and 0 < h <= H:
            top = rng_int(rng, H - h + 1)
            left = rng_int(rng, W - w + 1)
            out[0] = top - (top & 1)
            out[1] = left - (left & 1)
            out[2] = h
            out[3] = w
            return
    in_ratio = W / H
    if in_ratio < ratio_lo:
        w = W
        h = max(1, min(H, int(w / ratio_lo + 0.5)))
    elif in_ratio > ratio_hi:
        h = H
        w = max(1, min(W, int(h * ratio_hi + 0.5)))
    else:
        w = W
        h = H
    top = (H - h) // 2
    left = (W - w) // 2
    out[0] = top - (top & 1)
    out[1] = left - (left & 1)
    out[2] = h
    out[3] = w


@njit(cache=True)
def center_crop(H: int, W: int, fraction: float, out: np.ndarray) -> None:
    """A centred square of ``fraction`` x the short side -> ``out[:4]``."""
    side = max(1, min(min(H, W), int(min(H, W) * fraction + 0.5)))
    top = (H - side) // 2
    left = (W - side) // 2
    out[0] = top - (top & 1)
    out[1] = left - (left & 1)
    out[2] = side
    out[3] = side


@njit(cache=True)
def draw_view_params(
    seed: int,
    epoch: int,
    index: int,
    T: int,
    H: int,
    W: int,
    mode: int,
    delta: int,
    train: bool,
    settings: np.ndarray,
    params: np.ndarray,
    rng: np.ndarray,
) -> None:
    """Fill ``params`` (int32[V, 6]: frame, top, left, height, width, flip) for one sample.

    ``settings`` is float64[7]: video scale (lo, hi), image scale (lo, hi), ratio (lo, hi),
    centre-crop fraction. ``rng`` is a uint64[1] scratch state.
    """
    V = params.shape[0]
    rng_init(seed, epoch, index, rng)
    frames = params[:, 0]
    if train:
        sample_frames(mode, T, delta, V, frames, rng)
    else:
        sample_frames(2, T, delta, V, frames, rng)
    box = np.empty(4, dtype=np.int64)
    lo = settings[2] if T == 1 else settings[0]
    hi = settings[3] if T == 1 else settings[1]
    for v in range(V):
        if train:
            random_resized_crop(H, W, lo, hi, settings[4], settings[5], rng, box)
            flip = 1 if rng_uniform(rng) < 0.5 else 0
        else:
            center_crop(H, W, settings[6], box)
            flip = 0
        params[v, 1] = box[0]
        params[v, 2] = box[1]
        params[v, 3] = box[2]
        params[v, 4] = box[3]
        params[v, 5] = flip
