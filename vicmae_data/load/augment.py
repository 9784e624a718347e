"""Model-side augmentation of loader batches, in torch, on whatever device the batch is on.

Crops and flips were drawn by the loader's decoder (:mod:`vicmae_data.load.crops`); here
the strong colour set (colour jitter, grayscale, Gaussian blur, solarisation) is applied,
with its own settings per view (:class:`ViewAugment`):

- ``"symmetric"`` (the paper): the same ``aug`` for both views (Algorithm 1), on image
  rows only (section 4: video frames get crops and flips only);
- ``"asymmetric"`` (the authors' ``pretrain.py``): blur always on view 1 and never on
  view 2, solarisation 0.2 on view 2 only (see ``AUTHORS_VIEWS``); their pipeline has no
  notion of video, so every row gets it (``rows="all"``).

:func:`to_model_input` moves a :class:`~vicmae_data.load.batch.Batch` to the model's
device, augments and normalises it. Each operation is drawn per image
(:func:`draw_view_augment`) and then applied (:func:`apply_view_augment`), so what a row
got can be checked. Two deliberate differences from the authors' ops: their blur draws one
sigma per batch (torchvision's transform on a batched tensor), here one per image (the same
distribution per image); their colour jitter (FFCV-SSL) takes the grey of the unjittered
image for contrast and saturation, here each step uses the grey of its own input, as
torchvision does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

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


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """Separable blur of x (N, C, H, W), per-sample sigma (N,), kernel (width, height) odd.

    torchvision's ``gaussian_blur``: taps at integer offsets, normalised, reflect padding.
    """
    N, C, H, W = x.shape
    y = x.reshape(1, N * C, H, W)
    for size, dim in ((kernel[0], 3), (kernel[1], 2)):  # width along W, height along H
        r = size // 2
        t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
        k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))  # (N, size)
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (N*C, size)
        if dim == 3:
            y = functional.pad(y, (r, r, 0, 0), mode="reflect")
            y = functional.conv2d(y, k[:, None, None, :], groups=N * C)
        else:
            y = functional.pad(y, (0, 0, r, r), mode="reflect")
            y = functional.conv2d(y, k[:, None, :, None], groups=N * C)
    return y.reshape(N, C, H, W)


@dataclass(frozen=True)
class ViewAugment:
    """The strong colour set of one view, each operation drawn per image.

    Probabilities of colour jitter (``jitter``: brightness, contrast, saturation, hue
    amounts), grayscale, Gaussian blur (``blur_kernel`` (width, height) pixels, sigma
    uniform in ``blur_sigma``) and solarisation (values >= 128/255 inverted).
    """

    jitter_p: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: tuple[int, int] = (5, 9)
    solarize_p: float = 0.0


# The authors' pretrain.py (FFCV-SSL ops; torchvision's GaussianBlur on the batch):
# both views RandomColorJitter(0.8, 0.4, 0.4, 0.2, 0.1) (p, brightness, contrast,
# saturation, hue) and RandomGrayscale(0.2); view 1 adds GaussianBlur(kernel_size=(5, 9),
# sigma=(0.1, 2)) always; view 2 adds RandomSolarization(0.2, 128).
AUTHORS_VIEWS = (
    ViewAugment(blur_p=1.0, solarize_p=0.0),
    ViewAugment(blur_p=0.0, solarize_p=0.2),
)
# The paper: the same aug() on both views (Algorithm 1: "aug(V), aug(V)"); colour jitter,
# grayscale and blur (section 4; Table 10's caption), no solarisation named. Values where
# the paper is silent are the authors': jitter and grayscale as theirs; blur with their
# kernel and sigma at p 0.5, which keeps their expected one blurred view per pair.
PAPER_VIEWS = (ViewAugment(blur_p=0.5), ViewAugment(blur_p=0.5))
VIEW_AUGMENTS = {"symmetric": PAPER_VIEWS, "asymmetric": AUTHORS_VIEWS}


class AugmentDraws(NamedTuple):
    """What :func:`draw_view_augment` drew for n images (all tensors (n,) or (n, 4))."""

    jitter: torch.Tensor  # bool: colour jitter applied
    factors: torch.Tensor  # (n, 4): brightness, contrast, saturation factors; hue shift
    gray: torch.Tensor  # bool
    blur: torch.Tensor  # bool
    sigma: torch.Tensor  # blur sigma
    solarize: torch.Tensor  # bool


def draw_view_augment(
    n: int,
    cfg: ViewAugment,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> AugmentDraws:
    """Draw which operations ``n`` images get under ``cfg`` (``generator`` on ``device``)."""
    device = torch.device(device)

    def u() -> torch.Tensor:
        return _rand(n, device, generator)

    amounts = torch.tensor(cfg.jitter[:3], device=device)  # brightness, contrast, saturation
    jitter = u() < cfg.jitter_p
    factors = 1 + amounts * (2 * torch.stack([u(), u(), u()], dim=1) - 1)  # (n, 3)
    hue = cfg.jitter[3] * (2 * u() - 1)  # (n,) turns
    gray = u() < cfg.gray_p
    blur = u() < cfg.blur_p
    sigma = cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * u()
    solarize = u() < cfg.solarize_p
    return AugmentDraws(jitter, torch.cat([factors, hue[:, None]], 1), gray, blur, sigma, solarize)


def apply_view_augment(x: torch.Tensor, d: AugmentDraws, cfg: ViewAugment) -> torch.Tensor:
    """x: (N, 3, H, W) float in [0, 1] -> the draws ``d`` applied, same shape, new tensor."""
    dt = x.dtype

    def col(v: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, 1, 1, 1)
        return v.to(dt)[:, None, None, None]

    fb, fc, fs = (col(d.factors[:, i]) for i in range(3))
    # Brightness, contrast, saturation, hue in a fixed order, as FFCV-SSL's jitter
    # (torchvision shuffles the order).
    y = (x * fb).clamp(0, 1)
    mean = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
    y = (fc * y + (1 - fc) * mean).clamp(0, 1)
    y = (fs * y + (1 - fs) * _gray(y)).clamp(0, 1)
    y = _hue_shift(y, d.factors[:, 3].to(dt)).clamp(0, 1)
    x = torch.where(col(d.jitter).bool(), y, x)
    x = torch.where(col(d.gray).bool(), _gray(x).expand_as(x), x)
    if bool(d.blur.any()):
        x = torch.where(col(d.blur).bool(), _gaussian_blur(x, d.sigma, cfg.blur_kernel), x)
    # FFCV-SSL's RandomSolarization(0.2, 128) on uint8: values >= 128 become 255 - value.
    return torch.where(col(d.solarize).bool() & (x >= 128 / 255), 1 - x, x)


def strong_image_augment(
    x: torch.Tensor, generator: torch.Generator | None = None, cfg: ViewAugment = ViewAugment()
) -> torch.Tensor:
    """x: (N, 3, H, W) float in [0, 1] -> one view's colour set drawn per image and applied.

    The draws come from ``generator`` (on x's device) so that a run can be repeated.
    """
    return apply_view_augment(x, draw_view_augment(x.shape[0], cfg, x.device, generator), cfg)


def to_model_input(
    batch: Batch,
    device: torch.device | str,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    image_augment: bool = True,
    generator: torch.Generator | None = None,
    *,
    views: str | tuple[ViewAugment, ...] = "symmetric",
    rows: str = "images",
) -> torch.Tensor:
    """A loader batch -> normalised float views (B, V, 3, H, W) on ``device``.

    Moves the uint8 views (cheap: 1 byte per value) before converting, applies view v's
    colour set (``views``: ``"symmetric"``, ``"asymmetric"`` or one ``ViewAugment`` per
    view) to the rows whose sample is an image (``rows="images"``) or to every row
    (``rows="all"``), then normalises. ``image_augment=False``: no colour augmentation.
    """
    device = torch.device(device)
    batch_views = batch.views.to(device, non_blocking=True)  # (B, V, 3, H, W) uint8
    V = batch_views.shape[1]
    x = batch_views.float().div_(255).contiguous()  # (B, V, 3, H, W)
    if image_augment:
        per_view = VIEW_AUGMENTS[views] if isinstance(views, str) else views
        if len(per_view) < V:
            raise ValueError(f"{len(per_view)} view augmentations for {V} views")
        if rows == "all":
            picked = torch.arange(x.shape[0], device=device)
        elif rows == "images":
            picked = torch.nonzero(batch.is_image.to(device, non_blocking=True)).flatten()
        else:
            raise ValueError(f"rows must be 'images' or 'all', got {rows!r}")
        if picked.numel() > 0:
            for v in range(V):
                x[picked, v] = strong_image_augment(x[picked, v], generator, per_view[v])
    m = torch.tensor(mean, device=device).view(1, 1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 1, 3, 1, 1)
    return (x - m) / s
