"""What a layout's synth twin is given and returns, and the media writers every twin shares.

Each layout entry (:class:`vicmae_data.sources.items.Layout`) has a ``twin(request)`` that
writes a small dataset in its exact on-disk layout; :func:`vicmae_data.synth.dataset.
synth_dataset` validates the arguments, builds the :class:`TwinRequest` and calls it.
The media are real files (PyAV-encoded video, Pillow images) drawn by ``request.render``,
so the class of every item is visible in its pixels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from vicmae_data.synth.media import render_clip, write_image, write_video
from vicmae_data.synth.textures import render_texture_clip

# What the pixels show. "colour": a shape whose colour, form and direction are the class
# (easy: any encoder's features separate it). "texture": a pattern whose kind is the class
# while colours, position, size, orientation and scale drift (`make demo`: a randomly
# initialised encoder stays near chance, a pretrained one does not).
STYLES: dict[str, Callable[..., np.ndarray]] = {
    "colour": render_clip,
    "texture": render_texture_clip,
}

# Video profiles (codec, pix_fmt, width, height, fps), cycled so every layout gets every one:
# landscape, portrait, odd sizes (codecs that allow them), NTSC and low frame rates.
VIDEO_PROFILES: tuple[tuple[str, str, int, int, float | Fraction], ...] = (
    ("h264", "yuv420p", 128, 96, 25),
    ("vp9", "yuv420p", 131, 97, 24),
    ("h264", "yuv420p", 96, 128, 30),
    ("mpeg4", "yuv420p", 160, 120, Fraction(30000, 1001)),
    ("hevc", "yuv420p", 200, 112, 15),
    ("h264", "yuv444p", 99, 75, 20),
)
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((120, 90), (90, 140), (97, 61), (160, 120), (64, 64))


@dataclass(frozen=True)
class SynthItem:
    """One media file written (or, when `on_disk` is False, annotated but not written)."""

    split: str
    path: str  # posix, relative to SynthSummary.root (the output folder)
    label: int  # the class drawn, = the label a correct reader gives (-1: unlabelled split)
    class_name: str
    kind: str  # "video" or "image"
    codec: str  # video codec, or image format
    num_frames: int
    height: int
    width: int
    fps: float
    on_disk: bool = True


@dataclass(frozen=True)
class SynthSummary:
    """What `synth_dataset` wrote: the layout, its class names (index -> name) and its items."""

    layout: str
    root: Path
    classes: tuple[str, ...]
    items: tuple[SynthItem, ...]

    def counts(self) -> dict[str, int]:
        """Files written per split."""
        return dict(Counter(i.split for i in self.items if i.on_disk))

    def written(self, split: str) -> list[SynthItem]:
        """Items of `split` that are on disk, in writing order."""
        return [i for i in self.items if i.split == split and i.on_disk]


@dataclass(frozen=True)
class TwinRequest:
    """What `synth_dataset` asks a twin for (already validated)."""

    layout: str
    out: Path  # exists
    rng: np.random.Generator
    count: int  # items per split
    splits: tuple[str, ...]
    flat: bool | None  # the layout's own meaning, or None for its default
    missing: int  # annotated items per split left off the disk
    render: Callable[..., np.ndarray]
    variant: str | None = None


def absent(split: str, rel: str, label: int, name: str, kind: str = "video") -> SynthItem:
    """An item the annotations name but the disk lacks, as real releases have."""
    return SynthItem(split, rel, label, name, kind, "", 0, 0, 0, 0.0, on_disk=False)


def video_item(
    path: Path,
    split: str,
    rel: str,
    label: int,
    name: str,
    profile_index: int,
    rng: np.random.Generator,
    seconds: tuple[float, float] = (0.5, 3.0),
    codec: str | None = None,
    render: Callable[..., np.ndarray] = render_clip,
    draw: int | None = None,
) -> SynthItem:
    """Encode a clip of class ``draw`` (default ``label``) at ``path`` with the profile
    ``VIDEO_PROFILES[profile_index]`` (its codec replaced by ``codec`` if given)."""
    profile_codec, pix_fmt, width, height, fps = VIDEO_PROFILES[profile_index % len(VIDEO_PROFILES)]
    if codec is not None and codec != profile_codec:
        # The container decides the codec here (webm: vp9); x264/x265 need 4:4:4 at odd sizes.
        if codec in ("h264", "hevc") and (width % 2 or height % 2):
            pix_fmt = "yuv444p"
    codec = codec or profile_codec
    num_frames = max(2, round(float(rng.uniform(*seconds)) * float(fps)))
    clip = (codec, pix_fmt, width, height, fps, num_frames)
    return clip_item(path, split, rel, label, name, clip, rng, render, draw)


def clip_item(
    path: Path,
    split: str,
    rel: str,
    label: int,
    name: str,
    clip: tuple[str, str, int, int, float | Fraction, int],
    rng: np.random.Generator,
    render: Callable[..., np.ndarray] = render_clip,
    draw: int | None = None,
) -> SynthItem:
    """Encode ``clip`` = (codec, pix_fmt, width, height, fps, frames) showing class ``draw``
    (default ``label``; an unlabelled split's items still show a class) at ``path``."""
    codec, pix_fmt, width, height, fps, num_frames = clip
    shown = label if draw is None else draw
    frames = render(shown, num_frames, height, width, seed=int(rng.integers(2**31)))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, codec=codec, fps=fps, pix_fmt=pix_fmt)
    return SynthItem(split, rel, label, name, "video", codec, num_frames, height, width, float(fps))


def image_item(
    path: Path,
    split: str,
    rel: str,
    label: int,
    name: str,
    size_index: int,
    rng: np.random.Generator,
    fmt: str = "JPEG",
    mode: str = "RGB",
    render: Callable[..., np.ndarray] = render_clip,
    sizes: tuple[tuple[int, int], ...] = IMAGE_SIZES,
) -> SynthItem:
    """Save a still of class ``label`` at ``path``, sized ``sizes[size_index]`` (w, h)."""
    width, height = sizes[size_index % len(sizes)]
    frame = render(label, 1, height, width, seed=int(rng.integers(2**31)))[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, frame, format=fmt, mode=mode)
    codec = fmt if mode == "RGB" else f"{fmt}-{mode}"
    return SynthItem(split, rel, label, name, "image", codec, 1, height, width, 0.0)


def youtube_id(rng: np.random.Generator) -> str:
    """An 11-character id from YouTube's alphabet."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=11))
