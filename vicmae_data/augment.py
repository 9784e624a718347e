"""Per-view augmentation: crop/flip parameters in numba, strong image augmentation in torch.

The loader's compiled decoder calls :func:`draw_view_params` once per sample; it is a plain
``@njit`` function of (seed, epoch, sample index, frame count, frame size, settings), so
tests and users can reproduce exactly which frames, crops and flips a sample got.

Per view, ``params[v]`` holds ``(frame, top, left, height, width, flip)``:

- ``frame`` from the sampler (:mod:`vicmae_data.samplers`);
- a random resized crop as torchvision draws it (area fraction in ``scale``, log-uniform
  aspect ratio in ``ratio``, ten tries then a centre crop), with ``top`` and ``left``
  rounded down to even numbers because libwebp snaps its crop origin to even pixels;
- ``flip`` = 1 with probability 1/2.

With ``train=False``: the centre frame(s), a centred square crop of ``center_fraction``
of the short side (224/256 by default, the usual evaluation crop), no flip.

The strong image set of the paper's authors (colour jitter, grayscale, blur, solarisation)
runs on the batch in torch, on whatever device the batch is on: :func:`strong_image_augment`
and :func:`to_model_input`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from numba import njit
from torch.nn import functional

from vicmae_data.samplers import rng_init, rng_int, rng_uniform, sample_frames

if TYPE_CHECKING:
    from vicmae_data.loader import Batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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


# ---------------------------------------------------------------------------------------
# Strong image augmentation, batched in torch (any device).


def _rand(n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """x: (N, 3, H, W) -> luma (N, 1, H, W), ITU-R 601 weights as torchvision."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).to(x.dtype)


def _hue_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of x (N, 3, H, W) by ``shift`` (N,) turns, in YIQ space.

    A rotation of the chroma plane: cheaper than an RGB->HSV round trip and close to it
    for the small shifts (<= 0.1 turn) colour jitter uses.
    """
    yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
        device=x.device,
        dtype=x.dtype,
    )
    rgb = torch.linalg.inv(yiq)
    theta = shift * (2 * math.pi)
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(x.shape[0], 3, 3, device=x.device, dtype=x.dtype)  # (N, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    mat = rgb @ rot @ yiq  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", mat, x)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable blur of x (N, C, H, W) with a per-sample sigma (N,), reflect padding."""
    N, C, H, W = x.shape
    radius = max(1, int(0.05 * min(H, W)))  # kernel ~10% of the side, as SimCLR/BYOL
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))  # (N, K)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (N*C, K)
    y = x.reshape(1, N * C, H, W)
    y = functional.pad(y, (radius, radius, 0, 0), mode="reflect")
    y = functional.conv2d(y, k[:, None, None, :], groups=N * C)
    y = functional.pad(y, (0, 0, radius, radius), mode="reflect")
    y = functional.conv2d(y, k[:, None, :, None], groups=N * C)
    return y.reshape(N, C, H, W)


def strong_image_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    jitter_p: float = 0.8,
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
    gray_p: float = 0.2,
    blur_p: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    solarize_p: float = 0.2,
) -> torch.Tensor:
    """Colour jitter, grayscale, Gaussian blur and solarisation, each drawn per image.

    x: (N, 3, H, W) float in [0, 1] on any device -> same shape, new tensor. The draws come
    from ``generator`` (which must live on x's device) so a run can be repeated.
    """
    N, dev = x.shape[0], x.device
    b, c, s, h = jitter
    on = (_rand(N, dev, generator) < jitter_p).to(x.dtype)[:, None, None, None]  # (N,1,1,1)

    def factor(amount: float) -> torch.Tensor:
        f = 1 + amount * (2 * _rand(N, dev, generator) - 1)
        return f.to(x.dtype)[:, None, None, None]

    fb, fc, fs = factor(b), factor(c), factor(s)
    hue = h * (2 * _rand(N, dev, generator) - 1)
    # Brightness, contrast, saturation, hue in a fixed order (torchvision shuffles it).
    y = (x * fb).clamp(0, 1)
    mean = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
    y = (fc * y + (1 - fc) * mean).clamp(0, 1)
    y = (fs * y + (1 - fs) * _gray(y)).clamp(0, 1)
    y = _hue_shift(y, hue.to(x.dtype)).clamp(0, 1)
    x = on * y + (1 - on) * x

    gray = (_rand(N, dev, generator) < gray_p).to(x.dtype)[:, None, None, None]
    x = gray * _gray(x).expand_as(x) + (1 - gray) * x

    blur = _rand(N, dev, generator) < blur_p
    sigma = blur_sigma[0] + (blur_sigma[1] - blur_sigma[0]) * _rand(N, dev, generator)
    if bool(blur.any()):
        x = torch.where(blur[:, None, None, None], _gaussian_blur(x, sigma), x)

    sol = (_rand(N, dev, generator) < solarize_p)[:, None, None, None]
    x = torch.where(sol & (x >= 0.5), 1 - x, x)
    return x


def to_model_input(
    batch: Batch,
    device: torch.device | str,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    image_augment: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A loader batch -> normalised float views (B, V, 3, H, W) on ``device``.

    Moves the uint8 views (cheap: 1 byte per value) before converting, applies
    :func:`strong_image_augment` to the rows whose sample is an image, then normalises.
    """
    device = torch.device(device)
    views = batch.views.to(device, non_blocking=True)  # (B, V, 3, H, W) uint8
    _, V, C, H, W = views.shape
    x = views.float().div_(255).contiguous()  # (B, V, 3, H, W)
    if image_augment:
        is_image = batch.is_image.to(device, non_blocking=True)
        rows = torch.nonzero(is_image).flatten()
        if rows.numel() > 0:
            imgs = x[rows].reshape(-1, C, H, W)  # (b * V, 3, H, W)
            x[rows] = strong_image_augment(imgs, generator).reshape(-1, V, C, H, W)
    m = torch.tensor(mean, device=device).view(1, 1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 1, 3, 1, 1)
    return (x - m) / s
