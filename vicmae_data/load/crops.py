"""Per-view frame, crop and flip parameters, drawn in numba inside the loader's compiled decoder.

The loader's compiled decoder calls :func:`draw_view_params` once per sample; it is a plain
``@njit`` function of (seed, epoch, sample index, frame count, frame size, plan, settings),
so tests and users can reproduce exactly which frames, crops and flips a sample got.

Per view, ``params[v]`` holds ``(frame, top, left, height, width, flip)``:

- ``frame`` from the plan's sampler (:data:`~vicmae_data.load.samplers.SAMPLERS`);
- training, a random resized crop as torchvision draws it (area fraction in ``scale``,
  log-uniform aspect ratio in ``ratio``, ten tries then a centre crop) and ``flip`` = 1 with
  probability 1/2: for frame pairs one per view, with ``top`` and ``left`` rounded down to
  even numbers (libwebp snaps its crop origin to even pixels; the decoder since reads any
  origin, the pairs keep their draws); for a clip ONE crop and flip for all its frames, at
  exact offsets, as ST-MAE's ``random_resized_crop`` draws it for the whole clip
  (facebookresearch/mae_st ``util/decoder/transform.py`` ``_get_param_spatial_crop``, the
  same rule as torchvision's);
- evaluation (``train=False``), no flip: frame pairs get a centred square of
  ``center_fraction`` of the short side (224/256 by default, the usual evaluation crop);
  a clip gets spatial view ``j`` of ``J`` (:func:`uniform_crop`).

The plan (:func:`view_plan`) is an int64 array, not scalars: numba specialises compiled code
on scalar constants, not on an array's content, so one compiled kernel serves every sampler,
seed and view. The model-side image augmentation (colour jitter, grayscale, blur,
solarisation) runs later, in torch, on the decoded batch: :mod:`vicmae_data.load.augment`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types

from vicmae_data.load.native.ccall import c_function
from vicmae_data.load.samplers import (
    ARG_COUNT,
    ARG_DELTA,
    ARG_INDEX,
    ARG_STRIDE,
    NUM_ARGS,
    SAMPLERS,
    rng_init,
    rng_int,
    rng_uniform,
)

# The plan: int64[PLAN_WORDS]. The sampler's arguments sit at PLAN_ARGS (NUM_ARGS words).
PLAN_SAMPLER, PLAN_ARGS = 0, 1
PLAN_TRAIN = PLAN_ARGS + NUM_ARGS  # 1: random crops and flips; 0: deterministic views
PLAN_CLIP = PLAN_TRAIN + 1  # 1: one crop and flip for every view (a clip's frames)
PLAN_VIEW, PLAN_VIEWS = PLAN_CLIP + 1, PLAN_CLIP + 2  # spatial view j of J (evaluation)
PLAN_FLIP = PLAN_VIEWS + 1  # 1: training flips (p 0.5); 0: never (SSv2's "left to right")
PLAN_WORDS = PLAN_FLIP + 1
SPATIAL_VIEWS = (1, 3)  # mae_st's spatial_sampling: one centre crop, or 3 covering the long side

_call_sampler = c_function(types.int32, *([types.int64] * 5))


def view_plan(
    sampling: str,
    *,
    train: bool,
    delta: int = 8,
    clip_stride: int = 4,
    test_view: tuple[int, int, int, int] | None = None,
    flip: bool = True,
) -> np.ndarray:
    """The plan a decoder hands its kernels: which sampler, its arguments, which crops.

    ``sampling`` names an entry of :data:`~vicmae_data.load.samplers.SAMPLERS`; with
    ``train=False`` its ``evaluation`` entry draws the frames. ``test_view=(k, K, j, J)``
    (clips, evaluation only): temporal view ``k`` of ``K`` and spatial view ``j`` of ``J``;
    ``None`` is ``(0, 1, 0, 1)``, the centre clip and the centre crop. ``flip=False``: no
    horizontal flip in training (the flip is still drawn, so every other draw stays the
    same). Only valid in this process (it holds a function address).
    """
    sampler = SAMPLERS.get(sampling)
    if sampler is None:
        raise ValueError(f"sampling must be one of {sorted(SAMPLERS)}, not {sampling!r}")
    if delta < 0 or clip_stride < 1:
        raise ValueError(f"delta must be >= 0 and clip_stride >= 1, not {delta}, {clip_stride}")
    if test_view is not None and (train or not sampler.clip):
        raise ValueError(
            "test_view=(k, K, j, J) needs sampling='clip' and train=False (or 'segment')"
        )
    k, K, j, J = (-1, 1, 0, 1) if train else tuple(test_view or (0, 1, 0, 1))
    if not train and not (0 <= k < K and 0 <= j < J and J in SPATIAL_VIEWS):
        raise ValueError(
            f"test_view must be (k, K, j, J) with 0 <= k < K, 0 <= j < J and J in "
            f"{SPATIAL_VIEWS}, not {test_view}"
        )
    drawn = sampler if train else SAMPLERS[sampler.evaluation]
    plan = np.zeros(PLAN_WORDS, dtype=np.int64)
    plan[PLAN_SAMPLER] = drawn.address
    args = plan[PLAN_ARGS : PLAN_ARGS + NUM_ARGS]
    args[ARG_DELTA], args[ARG_STRIDE], args[ARG_INDEX], args[ARG_COUNT] = delta, clip_stride, k, K
    plan[PLAN_TRAIN], plan[PLAN_CLIP] = int(train), int(sampler.clip)
    plan[PLAN_VIEW], plan[PLAN_VIEWS] = j, J
    plan[PLAN_FLIP] = int(flip)
    return plan


@njit(cache=True)
def random_box(
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
            out[0] = rng_int(rng, H - h + 1)
            out[1] = rng_int(rng, W - w + 1)
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
    out[0] = (H - h) // 2
    out[1] = (W - w) // 2
    out[2] = h
    out[3] = w


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
    """:func:`random_box` with ``top`` and ``left`` rounded down to even (frame pairs)."""
    random_box(H, W, scale_lo, scale_hi, ratio_lo, ratio_hi, rng, out)
    out[0] -= out[0] & 1
    out[1] -= out[1] & 1


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
def uniform_crop(H: int, W: int, side: int, j: int, out: np.ndarray) -> None:
    """Square ``side`` crop ``j`` (0, 1, 2: start, centre, end of the long side) -> ``out[:4]``.

    facebookresearch/mae_st ``util/decoder/transform.py`` ``uniform_crop``: centred at
    ``ceil((H - side) / 2)``, ``ceil((W - side) / 2)``; view 0 / 2 moves to the top / bottom
    when the frame is taller than wide, else to the left / right. There the frame is first
    resized (short side to the crop size) and cropped after; here the crop is placed on the
    stored frame and resized once, which moves it by less than one stored pixel.
    """
    top = (H - side + 1) // 2
    left = (W - side + 1) // 2
    if H > W:
        if j == 0:
            top = 0
        elif j == 2:
            top = H - side
    elif j == 0:
        left = 0
    elif j == 2:
        left = W - side
    out[0] = top
    out[1] = left
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
    plan: np.ndarray,
    settings: np.ndarray,
    params: np.ndarray,
    rng: np.ndarray,
) -> None:
    """Fill ``params`` (int32[V, 6]: frame, top, left, height, width, flip) for one sample.

    ``plan`` is :func:`view_plan`'s int64 array. ``settings`` is float64[7]: video scale
    (lo, hi), image scale (lo, hi), ratio (lo, hi), centre-crop fraction. ``rng`` is a
    uint64[1] scratch state.
    """
    V = params.shape[0]
    rng_init(seed, epoch, index, rng)
    frames = np.zeros(V, dtype=np.int64)
    args = plan[PLAN_ARGS : PLAN_ARGS + NUM_ARGS].copy()
    _call_sampler(plan[PLAN_SAMPLER], T, V, args.ctypes.data, frames.ctypes.data,
                  rng.ctypes.data)  # fmt: skip
    train, clip = plan[PLAN_TRAIN] != 0, plan[PLAN_CLIP] != 0
    box = np.zeros(4, dtype=np.int64)
    lo = settings[2] if T == 1 else settings[0]
    hi = settings[3] if T == 1 else settings[1]
    flip = 0
    flips = plan[PLAN_FLIP] != 0
    for v in range(V):
        if train and clip:
            if v == 0:  # one crop and one flip for the whole clip
                random_box(H, W, lo, hi, settings[4], settings[5], rng, box)
                flip = 1 if rng_uniform(rng) < 0.5 and flips else 0
        elif train:
            random_resized_crop(H, W, lo, hi, settings[4], settings[5], rng, box)
            flip = 1 if rng_uniform(rng) < 0.5 and flips else 0
        elif clip and plan[PLAN_VIEWS] == 3:
            uniform_crop(H, W, min(H, W), plan[PLAN_VIEW], box)
        elif clip:  # one spatial view: mae_st's centre crop of 224 from a short side of 256
            side = max(1, min(min(H, W), int(min(H, W) * settings[6] + 0.5)))
            uniform_crop(H, W, side, 1, box)
        else:
            center_crop(H, W, settings[6], box)
        params[v, 0] = frames[v]
        params[v, 1] = box[0]
        params[v, 2] = box[1]
        params[v, 3] = box[2]
        params[v, 4] = box[3]
        params[v, 5] = flip
