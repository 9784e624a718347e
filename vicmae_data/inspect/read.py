"""One sample of a .beton as pixels, by index or by source name (for notebooks, tests, checks).

Decoding goes through Pillow's libwebp; the fast compiled path is the loader's.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from vicmae_data.format.beton import BetonError, BetonFile


def decode_frame(data: bytes) -> np.ndarray:
    """One WebP frame -> uint8 ``[H, W, 3]`` RGB. Raises ``ValueError`` when it cannot."""
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as im:
            im.load()
            rgb = im.convert("RGB") if im.mode != "RGB" else im
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ... on bad bytes
        raise ValueError(f"undecodable WebP ({type(exc).__name__}: {exc})") from None


def decode_frames(frames: Sequence[bytes]) -> np.ndarray:
    """WebP frames of one size -> uint8 ``[T, H, W, 3]``."""
    return np.stack([decode_frame(f) for f in frames])


def read_sample(
    path: str | os.PathLike, index: int | None = None, *, source: str | None = None
) -> tuple[np.ndarray, int, dict[str, Any]]:
    """One sample of a .beton, decoded: ``(frames, label, meta)``.

    Give the sample's ``index`` (``Batch.indices`` holds it for every loaded sample) or its
    ``source`` (the source path or id the converter stored in ``meta["source"]``).
    ``frames`` is uint8 ``[T, H, W, 3]`` (RGB). Raises ``IndexError`` for an index outside
    the file, ``KeyError`` for an unknown source and :class:`BetonError` for a file that is
    not a vicmae .beton.

    Example::

        frames, label, meta = read_sample("k400.beton", 0)
        frames.shape  # (T, 256, 340, 3)
        frames, label, meta = read_sample("k400.beton", source="abseiling/x1.mp4")
    """
    if (index is None) == (source is None):
        raise ValueError("read_sample needs exactly one of index and source")
    beton = BetonFile(path)
    if source is not None:
        index = beton.index_of(source)
    n = len(beton)
    if not 0 <= index < n:
        raise IndexError(f"{beton.path}: sample {index} out of range (the file has {n} samples)")
    sample = beton.sample(index)
    try:
        frames = decode_frames(sample.frames.frames)
    except ValueError as exc:
        raise BetonError(f"{beton.path}: sample {index}: {exc}") from None
    return frames, sample.label, sample.meta
