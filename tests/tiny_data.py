"""Small real .beton files the training tests share (written with the real writer)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from vicmae_data.format.beton import Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.write.beton_writer import write_beton


def _webp(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="WEBP", quality=80)
    return buf.getvalue()


def make_tiny_beton(path: Path, n: int = 32, frames: int = 4, size: int = 40) -> Path:
    """``n`` 4-frame clips of two classes (background colour), a square moving down."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        c = i % 2
        clip = []
        for t in range(frames):
            a = np.zeros((size, size, 3), np.uint8)
            a[..., c] = 160
            y = (4 * t + 3 * i) % (size - 10)
            a[y : y + 10, 5:15] = 255
            a = (a + rng.integers(0, 30, a.shape)).clip(0, 255).astype(np.uint8)
            clip.append(_webp(a))
        meta = {
            "source": f"clip{i}", "class_name": f"class{c}", "dataset": "test", "fps": 10.0,
            "num_frames": frames, "height": size, "width": size, "partial": False,
        }  # fmt: skip
        samples.append(Sample(FrameList(clip, size, size), c, meta))
    return write_beton(path, samples)


def write_class_clips(root: Path, count: int, frames: int, height: int, width: int) -> Path:
    """``count`` real h264 clips in two class folders ``c0``, ``c1`` (a folder dataset)."""
    from vicmae_data.synth.media import render_clip, write_video

    for i in range(count):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        write_video(folder / f"v{i:02d}.mp4", render_clip(i % 2, frames, height, width, seed=i))
    return root


def write_mixed_folder(root: Path, height: int, width: int) -> Path:
    """Class ``a`` holding a 6-frame clip, a one-frame video and a still image."""
    from vicmae_data.synth.media import render_clip, write_video

    (root / "a").mkdir(parents=True)
    clip = render_clip(0, 6, height, width, seed=1)
    write_video(root / "a" / "clip.mp4", clip)
    write_video(root / "a" / "one.mp4", clip[:1])
    Image.fromarray(clip[0]).save(root / "a" / "still.png")
    return root
