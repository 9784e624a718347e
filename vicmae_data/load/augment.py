"""Model-side augmentation of loader batches, in torch, on whatever device the batch is on.

Image samples get the strong image set of the paper's authors (colour jitter, grayscale,
Gaussian blur, solarisation); video frames get crops and flips only, which the loader's
decoder already drew (:mod:`vicmae_data.load.crops`).
:func:`to_model_input` moves a :class:`~vicmae_data.load.batch.Batch` to the model's
device, applies :func:`strong_image_augment` to its image rows and normalises.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from vicmae_data.load.batch import Batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
