"""How every item of a conversion is encoded: the settings and their defaults.

Light to import (no PyAV, no libwebp): the command line reads its defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass

# Frames resized so the short side is 256: room for the 224 crops of training
# (docs/benchmarks.md, "Storage"; `make bench-convert`).
DEFAULT_SHORT_SIDE = 256
# WebP quality, chosen from the storage table (docs/benchmarks.md, "Storage"; `make
# bench-convert`): the highest quality whose estimated size on real clips stays within 2x
# the source mp4s at native frame rate and short side 256, at 36 dB PSNR (q90: ~3x, 40 dB).
DEFAULT_QUALITY = 80
# libwebp effort 0..6. 2 is ~2.4x faster than libwebp's default 4 for the same bytes and
# PSNR (benchmarks/results/convert.json, "encoder": 274 against 114 frames/s at q90, 8,247
# against 8,445 bytes per frame).
DEFAULT_METHOD = 2
# A sample must fit one ffcv page (< 2 GiB) and a reader's memory; an 80 s clip at
# 256 short side is ~17 MB, so 512 MiB only stops something absurd (hours of video).
DEFAULT_MAX_SAMPLE_BYTES = 512 << 20
# Ten minutes: a 10 s Kinetics clip converts in well under a second, an hour-long
# video at 256 px in a few minutes; only something stuck takes longer.
DEFAULT_ITEM_TIMEOUT = 600.0
MAX_SAMPLE_BYTES = (1 << 31) - (1 << 20)  # ffcv's largest page, less room for the meta
WEBP_MAX_SIDE = 16383  # libwebp's limit on a picture's width and height


@dataclass(frozen=True)
class TranscodeSettings:
    """How every item of a conversion is encoded (part of the resume cache's key)."""

    short_side: int = DEFAULT_SHORT_SIDE
    fps: float | None = None  # None keeps the native rate; else at most this many frames/s
    max_frames: int | None = None  # keep at most this many frames per video
    quality: int = DEFAULT_QUALITY
    method: int = DEFAULT_METHOD
    max_sample_bytes: int = DEFAULT_MAX_SAMPLE_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.short_side <= WEBP_MAX_SIDE:
            raise ValueError(
                f"short_side must be in 1..{WEBP_MAX_SIDE} (WebP's largest side), "
                f"got {self.short_side}"
            )
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0 (or None for native), got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if not 0 <= self.quality <= 100:
            raise ValueError(f"quality must be in 0..100, got {self.quality}")
        if not 0 <= self.method <= 6:
            raise ValueError(f"method must be in 0..6, got {self.method}")
        if not 1 <= self.max_sample_bytes <= MAX_SAMPLE_BYTES:
            raise ValueError(
                f"max_sample_bytes must be in 1..{MAX_SAMPLE_BYTES} (a sample must fit one "
                f"ffcv page, under 2 GiB), got {self.max_sample_bytes}"
            )
