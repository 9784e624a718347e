"""Synthetic clips whose class is a texture, with every other factor drifting over time.

`render_texture_clip` draws a large disc filled with a two-colour pattern over a
gradient background; the pattern's kind is the class (stripes, checks, dots, ...).
Everything that dominates the raw pixels varies at random between clips *and* drifts
within each clip: the pattern's two colours and the background's two colours, the
gradient's direction, the disc's position and size, the pattern's orientation and scale.
A luminance contrast is always kept between the disc and the background and between the
pattern's colours (a colour whose drift would cross its neighbour's brightness jumps to
the other side instead). Sensor noise is drawn anew every frame.

So the only thing two distant frames of one clip share is the kind of pattern. Features
of a randomly initialised encoder, dominated by colour and brightness, do not separate
the classes linearly (a linear probe stays near chance), while contrastive learning
between two frames of one video (ViC-MAE's distant sampling) must become invariant to
the drifts and so keeps the pattern: the data `make demo` uses to show that pretraining
learns something. Each drifting factor follows its own smooth path through `KEYFRAMES`
independent random values spread over the clip, so frames from the two halves of a clip
(what distant sampling picks) are nearly independent in everything but the class.

(Shapes as classes, tried first, were not learned by the demo's tiny ViT in the few
hundred steps a CPU demo affords; textures are, because each 8x8 patch shows them.)
"""

from __future__ import annotations

import numpy as np

# Pattern kinds, one per class; no drift of orientation or scale turns one into another.
PATTERNS: tuple[str, ...] = ("stripes", "checks", "dots", "rings", "grid", "waves", "blobs")
KEYFRAMES = 5  # independent values per drifting factor along a clip
MIN_CONTRAST = 70.0  # luminance difference (0-255) kept between neighbouring colours
RADIUS = (0.45, 0.6)  # the disc's radius, as a fraction of the frame's short side
PERIOD = (0.08, 0.14)  # the pattern's period, as a fraction of the short side
NOISE_STD = 8.0  # sensor noise (0-255), drawn per pixel and frame


def render_texture_clip(
    class_index: int, num_frames: int, height: int, width: int, seed: int = 0
) -> np.ndarray:
    """Draw a clip of class `PATTERNS[class_index % 7]`; uint8 `[T, H, W, 3]`.

    Deterministic in its arguments. Colours, position, size, orientation and scale drift
    along the clip (see the module docstring); the kind of pattern never changes. With
    `num_frames == 1` (an image) the factors are those of a random moment of a clip.
    """
    if num_frames < 1 or height < 2 or width < 2:
        raise ValueError(
            f"render_texture_clip needs num_frames >= 1 and a size >= 2x2, got "
            f"{num_frames}x{height}x{width}"
        )
    rng = np.random.default_rng([seed, class_index])
    pattern = PATTERNS[class_index % len(PATTERNS)]
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else rng.uniform(size=1)
    short = min(height, width)

    def path(low: float, high: float, channels: int = 1) -> np.ndarray:
        return _path(rng, t, rng.uniform(low, high, size=(KEYFRAMES, channels)))  # [T, C]

    fg0, fg1, bg0, bg1 = (path(0, 255, 3) for _ in range(4))  # [T, 3] each
    grad_angle = path(0, 4 * np.pi)[:, 0]  # [T]
    cy = path(0.4, 0.6)[:, 0] * height  # [T] kept central: a centre crop holds the disc
    cx = path(0.4, 0.6)[:, 0] * width  # [T]
    radius = path(*RADIUS)[:, 0] * short  # [T]
    angle = path(0, 4 * np.pi)[:, 0]  # [T]
    period = path(*PERIOD)[:, 0] * short  # [T]

    yy = np.arange(height, dtype=np.float32)[:, None]  # [H, 1]
    xx = np.arange(width, dtype=np.float32)[None, :]  # [1, W]
    clip = np.empty((len(t), height, width, 3), dtype=np.uint8)
    for i in range(len(t)):
        # Background [H, W, 3]: a linear gradient between two colours along a drifting axis.
        u = (yy / max(height - 1, 1) - 0.5) * np.sin(grad_angle[i]) + (
            xx / max(width - 1, 1) - 0.5
        ) * np.cos(grad_angle[i])
        ramp = np.clip(u + 0.5, 0.0, 1.0)[..., None]  # [H, W, 1]
        frame = bg0[i] + (bg1[i] - bg0[i]) * ramp  # [H, W, 3]
        dy, dx = yy - cy[i], xx - cx[i]  # [H, 1], [1, W]
        disc = dy * dy + dx * dx <= radius[i] ** 2  # [H, W]
        # Pattern coordinates: rotated by the drifting angle, in units of the period.
        c, s = np.cos(angle[i]), np.sin(angle[i])
        py, px = (c * dy - s * dx) / period[i], (s * dy + c * dx) / period[i]  # [H, W]
        on = _pattern(pattern, py, px, rng)  # [H, W] bool
        under = frame[disc].mean(axis=0) if disc.any() else bg0[i]
        colour0 = _with_contrast(fg0[i], under)
        colour1 = _with_contrast(fg1[i], colour0)
        frame[disc] = colour0
        frame[disc & on] = colour1
        frame += rng.normal(0, NOISE_STD, size=frame.shape)
        clip[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return clip


def _pattern(kind: str, y: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Where the second colour goes; y, x: [H, W] pattern coordinates (period 1)."""
    fy, fx = y - np.floor(y), x - np.floor(x)  # position within a period, [0, 1)
    if kind == "stripes":
        return np.floor(y) % 2 == 0
    if kind == "checks":
        return (np.floor(y) + np.floor(x)) % 2 == 0
    if kind == "dots":
        return (fy - 0.5) ** 2 + (fx - 0.5) ** 2 < 0.09
    if kind == "rings":  # concentric around the disc's centre
        return np.floor(np.sqrt(y * y + x * x)) % 2 == 0
    if kind == "grid":
        return (fy < 0.3) | (fx < 0.3)
    if kind == "waves":
        return np.floor(y + 0.35 * np.sin(np.pi * x)) % 2 == 0
    if kind == "blobs":  # smooth random blobs of about the period's size, new every frame
        return _value_noise(rng, y, x) < 0.5
    raise ValueError(f"unknown pattern {kind!r}")


def _value_noise(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1] on a lattice of half a period, sampled at (y, x) [H, W]."""
    y, x = 2 * (y - y.min()), 2 * (x - x.min())
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    lattice = rng.uniform(size=(int(y0.max()) + 2, int(x0.max()) + 2))
    wy, wx = y - y0, x - x0
    wy, wx = wy * wy * (3 - 2 * wy), wx * wx * (3 - 2 * wx)  # smoothstep
    top = lattice[y0, x0] * (1 - wx) + lattice[y0, x0 + 1] * wx
    bottom = lattice[y0 + 1, x0] * (1 - wx) + lattice[y0 + 1, x0 + 1] * wx
    return top * (1 - wy) + bottom * wy


def _path(rng: np.random.Generator, t: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Smooth path through `keys` [K, C] at random times spread over [0, 1] -> [len(t), C]."""
    k = len(keys)
    # Key times: evenly spread with a random jitter, so factors do not all turn together.
    times = np.sort((np.arange(k) + rng.uniform(-0.3, 0.3, size=k)) / (k - 1))
    times[0], times[-1] = min(times[0], 0.0), max(times[-1], 1.0)
    seg = np.clip(np.searchsorted(times, t, side="right") - 1, 0, k - 2)  # [T]
    w = np.clip((t - times[seg]) / (times[seg + 1] - times[seg]), 0.0, 1.0)
    w = (0.5 - 0.5 * np.cos(np.pi * w))[:, None]  # eased, [T, 1]
    return (keys[seg] * (1 - w) + keys[seg + 1] * w).astype(np.float32)


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _with_contrast(colour: np.ndarray, under: np.ndarray) -> np.ndarray:
    """`colour` moved in brightness until its luminance differs from `under`'s by MIN_CONTRAST.

    It moves away from `under` on the side it is already on (so a drifting colour moves
    continuously), or to the other side when that one has no room.
    """
    diff = _luma(colour) - _luma(under)
    if abs(diff) >= MIN_CONTRAST:
        return colour
    side = 1.0 if diff >= 0 else -1.0
    target = _luma(under) + side * MIN_CONTRAST
    if not 0.0 <= target <= 255.0:
        target = _luma(under) - side * MIN_CONTRAST
    return np.clip(colour + (target - _luma(colour)), 0, 255)
