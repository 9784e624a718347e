"""What the tests share: real media made here (WebP frames, .beton files, h264 clips) and the
smallest model a training test runs.

- :func:`webp`, :func:`noise`: frames as the converter stores them (libwebp, through Pillow);
- :func:`make_tiny_beton`: clips of two classes written with the real writer;
- :func:`write_class_clips`, :func:`write_mixed_folder`: class folders of real videos and
  images for the converter (PyAV);
- :data:`TINY_MODEL`: the config overrides of a ViC-MAE small enough to train in seconds;
  :func:`tiny_pretrain_checkpoint`: a pretraining checkpoint of it, for the evaluations;
- :func:`sample_params`: the views a decoder draws for one sample, for a reference to crop;
- :func:`tmpfs`: a real small (full, read-only) disk; :func:`wait_for`: poll a condition.

Example::

    beton = make_tiny_beton(tmp_path / "tiny.beton", n=16)
    cfg = load_config(None, [*TINY_MODEL, "data.resolution=32", f"data.betons=[{beton}]"])
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from vicmae_data.format.beton import Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.write.beton_writer import write_beton

if TYPE_CHECKING:
    from vicmae_data.load.decoder import WebPFramesDecoder

# ViT-pico (patch 8; add data.resolution=32 for 16 patches), a one-block decoder 32 wide
# and a 64-wide projector: a pretraining step takes milliseconds on a CPU.
TINY_MODEL = [
    "model.arch=vit_pico_patch8", "model.decoder_dim=32", "model.decoder_depth=1",
    "model.decoder_heads=2", "model.projector_dims=[64,64,64]",
]  # fmt: skip


def tiny_pretrain_checkpoint(path: Path) -> Path:
    """A pretraining checkpoint at ``path`` of the untrained :data:`TINY_MODEL` at
    resolution 32 (weights from seed 0), as ``vicmae train pretrain`` saves one."""
    import torch

    from vicmae.config import load_config, to_dict
    from vicmae.engine.checkpoint import save_checkpoint
    from vicmae.model.vicmae import ViCMAE

    torch.manual_seed(0)
    cfg = load_config(None, [*TINY_MODEL, "data.resolution=32"])
    state = {"kind": "pretrain", "model": ViCMAE(cfg.model).state_dict(), "config": to_dict(cfg)}
    return save_checkpoint(path, {**state, "step": 0})


def webp(a: np.ndarray, *, quality: int = 80, lossless: bool = False) -> bytes:
    """An (H, W, 3) uint8 frame as WebP bytes."""
    out = io.BytesIO()
    Image.fromarray(a).save(out, format="WEBP", quality=quality, lossless=lossless)
    return out.getvalue()


def noise(seed: int, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 noise from ``seed``: frames that no other frame resembles."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


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
            clip.append(webp(a))
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


def sample_params(
    decoder: WebPFramesDecoder,
    sample_id: int,
    num_frames: int,
    height: int,
    width: int,
    epoch: int,
    image: bool | None = None,
) -> np.ndarray:
    """The (V, 6) int32 (frame, top, left, height, width, flip) rows ``decoder`` draws for
    one sample in its compiled pipeline (``image``: whether it is a still image; default: a
    one-frame sample is), through the same kernel and settings rows."""
    from vicmae_data.load.crops import draw_view_params

    params = np.zeros((decoder.num_views, 6), dtype=np.int32)
    one_frame_video = num_frames == 1 and image is False
    settings = decoder.video_settings if one_frame_video else decoder.settings
    draw_view_params(
        decoder.seed, epoch, sample_id, num_frames, height, width, decoder.plan, settings,
        params, np.zeros(1, np.uint64),
    )  # fmt: skip
    return params


@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """A real tmpfs mounted at ``path`` with ``options`` (``"size=1m"``, ``"ro"``); the
    test is skipped where this machine forbids mounting."""
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join(options or ("size=1m",))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def wait_for(condition: Callable[[], object], timeout: float = 120.0) -> None:
    """Poll ``condition()`` until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)
