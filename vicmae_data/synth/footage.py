"""Generated footage that is hard for encoders the way camera footage is: storage is measured on it.

Flat synthetic colour (what :func:`~vicmae_data.synth.media.render_clip` draws) compresses
far better than camera footage, in WebP and in H.264 alike, so sizes measured on it say
nothing about a real dataset. :func:`render_footage` draws what encoders meet in real clips:

- a scene with natural-image statistics: a "dead leaves" layer (occluding discs with a
  scale-invariant size distribution, the classic model of natural images' edges and
  regions; Lee, Mumford & Huang 2001) over a background whose amplitude spectrum falls as
  1/f^1.5, both shaded by a faint 1/f texture and slightly blurred (a lens);
- a camera that pans, zooms and rolls along smooth paths, resampled bilinearly: sub-pixel
  motion everywhere, which motion compensation predicts only approximately;
- shaded objects crossing the frame on their own paths, and light that drifts;
- an evolving texture over part of the frame (water or foliage: content that changes in
  place, which no motion vector predicts);
- sensor noise (Gaussian, sigma 3 grey levels).

Calibration: encoded by libx264 with ffmpeg's defaults (CRF 23, preset medium), a 340x256
clip of it takes about 4 KB per frame, as real Kinetics clips do (12.7 MB for 2,626 frames
in the set issue 11 measured); WebP at quality 90 takes about 2x more per frame than those
real clips did, so ratios measured on it are pessimistic for WebP.

Deterministic in its arguments; uint8 ``[T, H, W, 3]``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def power_law_noise(height: int, width: int, rng: np.random.Generator, beta: float) -> np.ndarray:
    """float ``[H, W]``, zero mean, unit variance, amplitude spectrum ~ 1/f^beta."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freq = np.sqrt(fx**2 + fy**2)
    freq[0, 0] = 1.0
    phase = rng.uniform(0, 2 * np.pi, size=freq.shape)
    img = np.fft.irfft2(freq**-beta * np.exp(1j * phase), s=(height, width))
    return (img - img.mean()) / (img.std() + 1e-9)


def dead_leaves(
    height: int, width: int, rng: np.random.Generator, count: int = 3000, r_min: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Occluding discs, radii ~ r^-3 in [r_min, short side / 2.5]: (colour [H, W, 3], covered)."""
    r_max = min(height, width) / 2.5
    u = rng.uniform(size=count)
    radii = 1 / np.sqrt((1 - u) / r_min**2 + u / r_max**2)  # inverse CDF of density r^-3
    ys = rng.uniform(-r_max, height + r_max, count)
    xs = rng.uniform(-r_max, width + r_max, count)
    colours = np.clip(rng.uniform(30, 220, (count, 1)) + rng.normal(0, 25, (count, 3)), 0, 255)
    canvas = np.zeros((height, width, 3), np.float32)
    covered = np.zeros((height, width), bool)
    for k in range(count):  # back to front: later discs cover earlier ones
        r = radii[k]
        y0, y1 = int(max(ys[k] - r, 0)), int(min(ys[k] + r + 1, height))
        x0, x1 = int(max(xs[k] - r, 0)), int(min(xs[k] + r + 1, width))
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1)[:, None] - ys[k]
        dx = np.arange(x0, x1)[None, :] - xs[k]
        inside = dy**2 + dx**2 <= r**2
        canvas[y0:y1, x0:x1][inside] = colours[k]
        covered[y0:y1, x0:x1] |= inside
    return canvas, covered


def _scene(height: int, width: int, rng: np.random.Generator) -> Image.Image:
    background = 128 + 40 * power_law_noise(height, width, rng, 1.5)[..., None] * [1, 0.9, 0.8]
    leaves, covered = dead_leaves(height, width, rng)
    scene = np.where(covered[..., None], leaves, background)
    scene *= 1 + 0.15 * power_law_noise(height, width, rng, 1.5)[..., None]
    image = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(0.8))


def render_footage(
    num_frames: int, height: int, width: int, seed: int = 0, fps: float = 30.0
) -> np.ndarray:
    """A clip of textured, moving content: uint8 ``[T, H, W, 3]`` (see the module docstring)."""
    if num_frames < 1 or height < 16 or width < 16:
        raise ValueError(
            f"render_footage needs >= 1 frame of >= 16x16, got {num_frames}x{height}x{width}"
        )
    rng = np.random.default_rng(seed)
    sh, sw = int(height * 1.6), int(width * 1.6)  # the scene the camera moves over
    scene = _scene(sh, sw, rng)
    t = np.arange(num_frames) / fps  # seconds
    ph = rng.uniform(0, 2 * np.pi, 5)
    cy = sh / 2 + 0.12 * sh * np.sin(2 * np.pi * 0.05 * t + ph[0])
    cx = sw / 2 + 0.12 * sw * np.sin(2 * np.pi * 0.04 * t + ph[1])
    zoom = 1 + 0.15 * np.sin(2 * np.pi * 0.03 * t + ph[2])
    roll = np.deg2rad(3.0) * np.sin(2 * np.pi * 0.035 * t + ph[3])
    light = 1 + 0.08 * np.sin(2 * np.pi * 0.07 * t + ph[4])

    n_obj = 8
    radius = rng.uniform(0.08, 0.2, n_obj) * min(height, width)
    start = rng.uniform(0, 1, (n_obj, 2)) * [height, width]
    velocity = rng.normal(0, 0.06, (n_obj, 2)) * [height, width]  # per second
    colour = rng.uniform(30, 220, (n_obj, 3))
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]

    flows = [power_law_noise(height, width, rng, 1.2) for _ in range(3)]
    region = (power_law_noise(height, width, rng, 2.0) > 0.3).astype(np.uint8) * 255
    region = Image.fromarray(region).filter(ImageFilter.GaussianBlur(3))
    region = np.asarray(region, np.float32)[..., None] / 255  # [H, W, 1]
    tint = np.array([0.8, 1.0, 0.7], np.float32)

    clip = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        c, s = np.cos(roll[i]) / zoom[i], np.sin(roll[i]) / zoom[i]
        # Output pixel (x, y) samples the scene at A @ (x, y, 1): centred at (cx, cy).
        affine = (c, -s, cx[i] - c * width / 2 + s * height / 2,
                  s, c, cy[i] - s * width / 2 - c * height / 2)  # fmt: skip
        frame = np.asarray(
            scene.transform(
                (width, height), Image.Transform.AFFINE, affine, Image.Resampling.BILINEAR
            ),
            np.float32,
        )
        for k in range(n_obj):
            py, px = start[k] + velocity[k] * t[i]
            dist = np.sqrt((yy - py) ** 2 + (xx - px) ** 2)
            alpha = np.clip(radius[k] - dist + 0.5, 0, 1)[..., None]  # anti-aliased edge
            shade = colour[k] * (0.85 + 0.15 * np.cos((yy - py) / radius[k] * 3))[..., None]
            frame = frame * (1 - alpha) + shade * alpha
        th = 2 * np.pi * 2.0 * t[i]
        evolving = np.cos(th) * flows[0] + np.sin(th) * flows[1] + 0.5 * np.cos(2 * th) * flows[2]
        frame = frame * light[i] + region * 60 * evolving[..., None] * tint
        frame += rng.normal(0, 3.0, frame.shape)
        clip[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return clip
