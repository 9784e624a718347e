"""One source item (video or image) -> resized WebP frames, as a stream.

A video is decoded frame by frame with PyAV; each kept frame is scaled by swscale straight
from its native pixel format (8- or 10-bit YUV, RGB, ...) to RGB at the target size, then
WebP-encoded and dropped, so memory holds one decoded frame plus the encoded bytes, never
the decoded clip. An image goes through Pillow (which reads what the file *is*, not what
its name says: ImageNet's PNG and CMYK/grayscale files named ``.JPEG``) and becomes a
one-frame item.

Choices, measured with ``benchmarks/bench_convert.py``:

- Resize: the short side becomes ``short_side`` with the aspect kept; frames already at
  or below it are kept at their native size (never upscaled: it would add bytes, no
  information). swscale's ``AREA`` filter, fused with the pixel-format conversion, is
  ~2x faster than decoding to RGB and resizing with Pillow, and antialiases the downscale.
- WebP: libwebp through the ``webp`` package (cffi; same bytes as Pillow's encoder, a
  little faster as it skips Pillow's image copy). ``method`` is libwebp's effort 0..6.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import webp
from PIL import Image, UnidentifiedImageError

from vicmae_data.write.settings import DEFAULT_MAX_SAMPLE_BYTES as DEFAULT_MAX_SAMPLE_BYTES
from vicmae_data.write.settings import DEFAULT_METHOD as DEFAULT_METHOD
from vicmae_data.write.settings import DEFAULT_QUALITY as DEFAULT_QUALITY
from vicmae_data.write.settings import WEBP_MAX_SIDE, TranscodeSettings

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
# swscale's area-averaging filter: antialiased downscale at bilinear's speed (measured).
INTERPOLATION = "AREA"


class SkipError(Exception):
    """The item yields no frame; ``reason`` says why (it goes to the report)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Transcoded:
    """The WebP frames of one item and what the report and the sample's meta need."""

    frames: list[bytes]
    height: int
    width: int
    fps: float  # stored rate (0.0 for an image)
    source_fps: float
    source_height: int
    source_width: int
    partial: str | None = None  # why decoding stopped part-way (frames kept), else None
    capped: str | None = None  # why frames were dropped on purpose (--max-frames, byte cap)
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "video"  # "image" for a still image; a one-frame video stays a video

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames)


def target_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side scaled to ``short_side``, never upscaled."""
    short = min(height, width)
    if short <= short_side:
        return height, width
    scale = short_side / short
    if height <= width:
        return short_side, max(1, round(width * scale))
    return max(1, round(height * scale)), short_side


def rgb_frame(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    """Decoded frame (any pixel format) -> uint8 ``[height, width, 3]``, C-contiguous."""
    if (frame.height, frame.width) == (height, width):
        rgb = frame.reformat(format="rgb24")
    else:
        rgb = frame.reformat(width, height, format="rgb24", interpolation=INTERPOLATION)
    return np.ascontiguousarray(rgb.to_ndarray())  # rows may be padded: copy to contiguous


def encode_webp(rgb: np.ndarray, config: webp.WebPConfig) -> bytes:
    """uint8 ``[H, W, 3]`` -> WebP bytes; :class:`SkipError` when libwebp refuses it."""
    check_webp_size(rgb.shape[0], rgb.shape[1])
    try:
        return bytes(webp.WebPPicture.from_numpy(rgb).encode(config).buffer())
    except (AttributeError, RuntimeError, ValueError, MemoryError) as exc:
        # The webp package reports a failed encode as an AttributeError on a None result.
        raise SkipError(f"WebP encoding failed ({type(exc).__name__}: {_one_line(exc)})") from None


def check_webp_size(height: int, width: int) -> None:
    """:class:`SkipError` for a frame larger than WebP can hold, before any encoding."""
    if max(height, width) > WEBP_MAX_SIDE:
        raise SkipError(
            f"frame of {height} x {width} (h x w) after resizing: WebP holds at most "
            f"{WEBP_MAX_SIDE} pixels a side (a smaller --short-side would fit it)"
        )


def webp_config(settings: TranscodeSettings) -> webp.WebPConfig:
    return webp.WebPConfig.new(quality=float(settings.quality), method=settings.method)


def transcode(path: str | os.PathLike, settings: TranscodeSettings) -> Transcoded:
    """Decode, resize and WebP-encode one item. Raises :class:`SkipError` if it yields nothing."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SkipError(f"unreadable: {exc.strerror or exc}") from None
    if size == 0:
        raise SkipError("empty file (0 bytes)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return transcode_image(path, settings)
    try:
        return transcode_video(path, settings)
    except SkipError as video_skip:
        # A still image under a video name (or no suffix) is still a good item.
        try:
            return transcode_image(path, settings)
        except SkipError:
            raise video_skip from None


def transcode_image(path: Path, settings: TranscodeSettings) -> Transcoded:
    """An image -> a one-frame item (fps 0.0)."""
    try:
        with Image.open(path) as img:
            src_w, src_h = img.size
            height, width = target_size(src_h, src_w, settings.short_side)
            check_webp_size(height, width)  # before decoding a huge image for nothing
            # JPEG can decode at 1/2, 1/4, 1/8 scale for free: ask for >= the target size.
            img.draft("RGB", (width, height))
            img.load()
            # CMYK, grayscale, palette, 16-bit, alpha: all become plain RGB here.
            rgb_img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SkipError(f"undecodable image: {_one_line(exc)}") from None
    except Image.DecompressionBombError as exc:
        raise SkipError(f"image too large: {_one_line(exc)}") from None
    if rgb_img.size != (width, height):
        rgb_img = rgb_img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    rgb = np.asarray(rgb_img, dtype=np.uint8)  # [H, W, 3]
    frame = encode_webp(np.ascontiguousarray(rgb), webp_config(settings))
    return Transcoded([frame], height, width, 0.0, 0.0, src_h, src_w, kind="image")


def transcode_video(path: Path, settings: TranscodeSettings) -> Transcoded:
    """A video -> its kept frames, decoded and encoded one at a time."""
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise SkipError(f"undecodable: {_error_text(exc)}") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no"]
            raise SkipError(f"no video stream ({', '.join(kinds)} streams only)")
        stream = container.streams.video[0]
        return _encode_stream(container, stream, settings)


def _encode_stream(container: Any, stream: Any, settings: TranscodeSettings) -> Transcoded:
    source_fps = _stream_fps(stream)
    encoder = _FrameEncoder(container.name, settings, source_fps)
    partial: str | None = None
    try:
        for packet in container.demux(stream):
            # A flush packet (data None) at the end drains the decoder's buffered frames.
            for frame in stream.decode(packet):
                if not encoder.add(frame):
                    break
            if encoder.capped:
                break
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        error = _error_text(exc)
        try:  # keep the frames the decoder already holds (frame threading buffers a few)
            for frame in stream.decode(None):
                if not encoder.add(frame):
                    break
        except (av.FFmpegError, OSError, ValueError):
            pass
        partial = f"decoding stopped after {encoder.decoded} frames: {error}"
    if not encoder.frames:
        reason = partial.split(": ", 1)[-1] if partial else "no decodable video frame"
        raise SkipError(f"undecodable: {reason}" if partial else reason)
    if partial is None and encoder.capped is None:
        partial = _shortfall(stream, container, encoder, source_fps)
    assert encoder.size is not None
    return Transcoded(
        encoder.frames,
        encoder.size[0],
        encoder.size[1],
        encoder.stored_fps,
        float(source_fps),
        encoder.source_size[0],
        encoder.source_size[1],
        partial=partial,
        capped=encoder.capped,
        extra={"decoded_frames": encoder.decoded, "pix_fmt": stream.codec_context.pix_fmt},
    )


class _FrameEncoder:
    """Thins (fps cap), resizes and WebP-encodes decoded frames one at a time."""

    def __init__(self, name: str, settings: TranscodeSettings, source_fps: float) -> None:
        self.name = name
        self.settings = settings
        self.config = webp_config(settings)
        cap = settings.fps
        if cap is None:
            self.stored_fps = source_fps
        else:
            self.stored_fps = min(source_fps, cap) if source_fps > 0 else cap
        self.source_fps = source_fps
        self.frames: list[bytes] = []
        self.nbytes = 0
        self.decoded = 0
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.last_slot = -1
        self.size: tuple[int, int] | None = None
        self.source_size = (0, 0)
        self.capped: str | None = None

    def add(self, frame: av.VideoFrame) -> bool:
        """Take one decoded frame; False once a cap says to stop."""
        if self.capped:
            return False
        t = _frame_time(frame, self.decoded, self.source_fps)
        self.decoded += 1
        self.first_time = t if self.first_time is None else self.first_time
        self.last_time = t
        cap = self.settings.fps
        if cap is not None:
            # Keep the first frame of each 1/fps slot by presentation time, so a
            # variable-frame-rate source is thinned by time, not by frame count.
            slot = math.floor((t - self.first_time) * cap + 1e-6)
            if slot <= self.last_slot:
                return True
            self.last_slot = slot
        if self.size is None:
            self.source_size = (frame.height, frame.width)
            self.size = target_size(frame.height, frame.width, self.settings.short_side)
            check_webp_size(*self.size)
        data = encode_webp(rgb_frame(frame, *self.size), self.config)
        if self.nbytes + len(data) > self.settings.max_sample_bytes:
            self.capped = (
                f"stopped at {len(self.frames)} frames: the sample would exceed "
                f"max_sample_bytes={self.settings.max_sample_bytes}"
            )
            log.warning("%s: %s", self.name, self.capped)
            return False
        self.frames.append(data)
        self.nbytes += len(data)
        if self.settings.max_frames is not None and len(self.frames) >= self.settings.max_frames:
            self.capped = f"stopped at max_frames={self.settings.max_frames}"
            return False
        return True


def _shortfall(stream: Any, container: Any, enc: _FrameEncoder, fps: float) -> str | None:
    """Why a cleanly ended decode is short of what the container announced, else None."""
    expected = int(stream.frames or 0)
    if expected and enc.decoded < expected:
        return f"decoded {enc.decoded} of {expected} frames (file ends early)"
    if expected or fps <= 0 or enc.last_time is None:
        return None
    # Matroska/WebM announce no frame count, only a duration.
    if stream.duration and stream.time_base:
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        end = start + float(stream.duration * stream.time_base)
    elif container.duration:
        end = container.duration / 1e6
    else:
        return None
    # A clean decode's last frame starts one frame before the end; allow one more of slack.
    if enc.last_time + 2.0 / fps < end - 1e-3:
        return f"decoding ended at {enc.last_time:.2f} s of {end:.2f} s (file ends early)"
    return None


def _stream_fps(stream: Any) -> float:
    """The stream's nominal frame rate (average over the file for variable frame rate)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if 0 < value < 1000:  # containers without a rate report 90k-style timebases
                return value
    return 0.0


def _frame_time(frame: av.VideoFrame, index: int, source_fps: float) -> float:
    if frame.pts is not None and frame.time_base:
        return float(frame.pts * Fraction(frame.time_base))
    return index / source_fps if source_fps > 0 else float(index)


def _error_text(exc: BaseException) -> str:
    """An FFmpeg error without the file name (the report already names the file)."""
    text = getattr(exc, "strerror", None) if isinstance(exc, av.FFmpegError) else None
    return _one_line(text or exc)


def _one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
