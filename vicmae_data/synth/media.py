"""Synthetic media: clips whose class is visible in the pixels, and writers for real files.

`render_clip` draws a moving shape with numpy; the class decides the shape's colour, form
and direction of motion, so a representation learned from the frames can be checked with
a linear probe. `write_video` encodes frames with PyAV into any container/codec it can
write (also 10-bit, variable frame rate, with an audio track, or audio only) and
`write_image` saves with Pillow (also CMYK/grayscale JPEG and PNG under any file name).
Every writer goes through :func:`vicmae_data.atomic.atomic_path`, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from vicmae_data.atomic import atomic_path

# Distinct, saturated colours: the strongest class cue, visible after any resize.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 40, 40),
    (40, 200, 60),
    (50, 90, 240),
    (240, 220, 40),
    (220, 60, 220),
    (40, 220, 220),
    (250, 140, 20),
    (250, 250, 250),
)
SHAPES: tuple[str, ...] = ("disc", "square", "diamond")
# Unit motion vectors (dy, dx): right, down, left, up.
DIRECTIONS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (0, -1), (-1, 0))

# Container format (as ffmpeg names it) for each file extension we write.
CONTAINERS: dict[str, str] = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".webm": "webm",
    ".avi": "avi",
    ".mkv": "matroska",
    ".mov": "mov",
}
# Short codec names accepted by `write_video`, mapped to the encoder PyAV opens.
CODECS: dict[str, str] = {
    "h264": "libx264",
    "hevc": "libx265",
    "vp9": "libvpx-vp9",
    "vp8": "libvpx",
    "mpeg4": "mpeg4",
    "mjpeg": "mjpeg",
}
# Encoder options that keep the test logs quiet and encoding fast.
_QUIET: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=none"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
}


@dataclass(frozen=True)
class ClipSpec:
    """What `render_clip` draws: class, length and size of a clip, and its random seed."""

    class_index: int
    num_frames: int
    height: int
    width: int
    seed: int = 0


def class_appearance(class_index: int) -> tuple[tuple[int, int, int], str, tuple[int, int]]:
    """Colour, shape name and motion direction `(dy, dx)` of a class.

    Colour cycles fastest, so the first `len(PALETTE)` classes differ by colour alone
    (a nearest-mean classifier separates them); shape and direction separate the rest.
    """
    colour = PALETTE[class_index % len(PALETTE)]
    shape = SHAPES[(class_index // len(PALETTE)) % len(SHAPES)]
    direction = DIRECTIONS[(class_index // (len(PALETTE) * len(SHAPES)) + class_index) % 4]
    return colour, shape, direction


def render_clip(
    class_index: int, num_frames: int, height: int, width: int, seed: int = 0
) -> np.ndarray:
    """Draw a clip of one class: a coloured shape moving over a textured background.

    Returns uint8 `[T, H, W, 3]`. Deterministic in its arguments. The background (a dim
    random gradient plus noise) and a grey distractor vary with `seed`; the shape's colour,
    form and direction depend only on `class_index`.
    """
    if num_frames < 1 or height < 2 or width < 2:
        raise ValueError(
            f"render_clip needs num_frames >= 1 and a size >= 2x2, got "
            f"{num_frames}x{height}x{width}"
        )
    rng = np.random.default_rng([seed, class_index])
    colour, shape, (dy, dx) = class_appearance(class_index)
    yy = np.arange(height, dtype=np.float32)[None, :, None]  # [1, H, 1]
    xx = np.arange(width, dtype=np.float32)[None, None, :]  # [1, 1, W]

    # Background [H, W, 3]: dim gradient between two random dark colours, plus noise.
    c0, c1 = rng.uniform(0, 70, size=(2, 3)).astype(np.float32)
    ramp = (yy[0] / max(height - 1, 1) + xx[0] / max(width - 1, 1)) / 2  # [H, W]
    background = c0 + (c1 - c0) * ramp[..., None]
    background += rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)

    # Shape centre per frame [T]: starts off-centre and crosses the frame along (dy, dx).
    short = min(height, width)
    radius = max(2.0, short * rng.uniform(0.14, 0.2))
    t = np.linspace(0.0, 1.0, num_frames, dtype=np.float32)
    travel = 0.5 * short
    cy = height / 2 + dy * travel * (t - 0.5) + rng.uniform(-0.1, 0.1) * height
    cx = width / 2 + dx * travel * (t - 0.5) + rng.uniform(-0.1, 0.1) * width
    mask = _shape_mask(shape, yy - cy[:, None, None], xx - cx[:, None, None], radius)  # [T, H, W]

    # A small grey distractor on a random path, so the colour cue is not the whole frame.
    p0, p1 = rng.uniform(0.1, 0.9, size=(2, 2))
    gy = (p0[0] + (p1[0] - p0[0]) * t) * height
    gx = (p0[1] + (p1[1] - p0[1]) * t) * width
    grey = _shape_mask("disc", yy - gy[:, None, None], xx - gx[:, None, None], radius * 0.5)

    clip = np.broadcast_to(background, (num_frames, height, width, 3)).copy()  # [T, H, W, 3]
    clip[grey] = 128.0
    clip[mask] = np.asarray(colour, dtype=np.float32)
    return np.clip(clip, 0, 255).astype(np.uint8)


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    if shape == "disc":
        return dy * dy + dx * dx <= radius * radius
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) <= radius * 0.85
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= radius * 1.2
    raise ValueError(f"unknown shape {shape!r}")


def write_video(
    path: Path | str,
    frames: np.ndarray | Iterable[np.ndarray] | ClipSpec,
    *,
    codec: str = "h264",
    fps: float | Fraction = 25,
    pix_fmt: str = "yuv420p",
    container: str | None = None,
    options: dict[str, str] | None = None,
    timestamps: Sequence[float] | None = None,
    audio: bool = False,
    bit_rate: int | None = None,
) -> Path:
    """Encode RGB frames into a real video file with PyAV; returns the path written.

    frames: uint8 `[T, H, W, 3]`, an iterable of `[H, W, 3]` frames, or a `ClipSpec`.
    codec: a short name from `CODECS` (h264, hevc, vp9, vp8, mpeg4, mjpeg) or an encoder
        name PyAV knows. pix_fmt: e.g. `yuv420p`, `yuv444p`, `yuv420p10le` (10-bit).
    container: ffmpeg format name; default from the file extension (`CONTAINERS`).
    timestamps: presentation time in seconds of each frame, for variable frame rate;
        default is a constant `fps`.
    audio: also write a short mono sine track (AAC in mp4/mov, Opus in webm/mkv, MP3 in avi).
    """
    path = Path(path)
    if isinstance(frames, ClipSpec):
        frames = render_clip(
            frames.class_index, frames.num_frames, frames.height, frames.width, frames.seed
        )
    encoder = CODECS.get(codec, codec)
    fmt = container or _container_for(path)
    rate = Fraction(fps).limit_denominator(100_000)
    n = 0
    with atomic_path(path, durable=False) as tmp:
        with av.open(str(tmp), mode="w", format=fmt) as out:
            stream = astream = None
            for i, frame in enumerate(frames):
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if stream is None:
                    stream = _open_video_stream(
                        out,
                        encoder,
                        rate,
                        frame.shape,
                        pix_fmt,
                        options,
                        bit_rate,
                        timestamps is not None,
                    )
                    astream = _open_audio_stream(out, fmt) if audio else None
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                if timestamps is not None:
                    vf.pts = round(timestamps[i] * 1000)
                    vf.time_base = Fraction(1, 1000)
                else:
                    vf.pts = i
                    vf.time_base = 1 / rate
                out.mux(stream.encode(vf))
                n += 1
            if stream is None:
                raise ValueError(f"no frames to write to {path}")
            out.mux(stream.encode())
            if astream is not None:
                _write_audio(out, astream, seconds=n / float(rate))
    return path


def write_audio_only(path: Path | str, seconds: float = 1.0, container: str | None = None) -> Path:
    """Write a file with an audio track and no video stream (a hostile input for converters)."""
    path = Path(path)
    fmt = container or _container_for(path)
    with atomic_path(path, durable=False) as tmp:
        with av.open(str(tmp), mode="w", format=fmt) as out:
            _write_audio(out, _open_audio_stream(out, fmt), seconds=seconds)
    return path


def write_image(
    path: Path | str,
    array: np.ndarray,
    format: str = "JPEG",
    *,
    mode: str = "RGB",
    quality: int = 90,
) -> Path:
    """Save uint8 `[H, W, 3]` (or `[H, W]`) with Pillow in `format`, whatever the file name says.

    mode: `RGB`, `L` (grayscale) or `CMYK` (only JPEG stores CMYK): the array is converted
    first, which is how ImageNet's odd files (a PNG and CMYK/grey JPEGs named `.JPEG`) are made.
    """
    path = Path(path)
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    image = image.convert(mode)
    kwargs = {"quality": quality} if format.upper() in ("JPEG", "WEBP") else {}
    with atomic_path(path, durable=False) as tmp:
        image.save(tmp, format=format, **kwargs)
    return path


def _container_for(path: Path) -> str:
    try:
        return CONTAINERS[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"no container known for extension {path.suffix!r} of {path}; pass container="
        ) from None


def _open_video_stream(
    out,
    encoder: str,
    rate: Fraction,
    shape: tuple[int, ...],
    pix_fmt: str,
    options: dict[str, str] | None,
    bit_rate: int | None,
    vfr: bool,
):
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"frames must be [H, W, 3] uint8, got shape {shape}")
    height, width = shape[:2]
    subsampled = pix_fmt.startswith(("yuv420", "yuvj420", "nv12"))
    if subsampled and encoder in ("libx264", "libx265") and (height % 2 or width % 2):
        raise ValueError(
            f"{encoder} cannot encode {pix_fmt} at odd size {height} x {width} (h x w); "
            f"use pix_fmt='yuv444p' or codec vp9/mpeg4"
        )
    stream = out.add_stream(encoder, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if vfr:
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
    if bit_rate:
        stream.bit_rate = bit_rate
    stream.options = {**_QUIET.get(encoder, {}), **(options or {})}
    return stream


def _open_audio_stream(out, fmt: str):
    codec = {"webm": "libopus", "matroska": "libopus", "avi": "libmp3lame"}.get(fmt, "aac")
    stream = out.add_stream(codec, rate=48000)
    stream.layout = "mono"
    return stream


def _write_audio(out, stream, seconds: float) -> None:
    rate = stream.codec_context.sample_rate
    samples = max(int(seconds * rate), 1)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
    fmt = stream.codec_context.format.name  # fltp (aac, opus), s32p (mp3)
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, samples, chunk):
        piece = tone[start : start + chunk]
        if fmt.startswith("s16"):
            data = (piece * 32767).astype(np.int16)[None, :]
        elif fmt.startswith("s32"):
            data = (piece * 2147483647).astype(np.int32)[None, :]
        else:
            data = piece[None, :]
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode())
