"""A sample's frames as stored: one blob of WebP frames behind an offset table.

    offsets: uint32[T + 1]   offsets[0] == 4 * (T + 1); frame t is blob[offsets[t]:offsets[t + 1]]
    frame 0 WebP bytes, frame 1 WebP bytes, ...

The blob's row in the .beton's metadata table (:data:`~vicmae_data.format.tables.FRAMES_META`)
holds its pointer and size, the frame count, the stored frame size and the blob's CRC32
(:func:`frames_row`).

NumPy only (no ffcv): the inspection commands, the conversion workers and the writer import it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OFFSET_DTYPE = np.dtype("<u4")


@dataclass(frozen=True)
class FrameList:
    """What the writer takes for one sample: WebP-encoded frames of one size."""

    frames: Sequence[bytes]
    height: int
    width: int

    def __post_init__(self) -> None:
        if len(self.frames) == 0:
            raise ValueError("a FrameList needs at least one frame")


def pack_frames(frames: Sequence[bytes]) -> np.ndarray:
    """Frame bytes -> one uint8 blob (offset table, then the frames back to back)."""
    num = len(frames)
    header = OFFSET_DTYPE.itemsize * (num + 1)
    sizes = np.fromiter((len(f) for f in frames), dtype=np.int64, count=num)
    offsets = np.empty(num + 1, dtype=np.int64)
    offsets[0] = header
    np.cumsum(sizes, out=offsets[1:])
    offsets[1:] += header
    if offsets[-1] >= 2**32:
        raise ValueError(f"a sample of {offsets[-1]} bytes does not fit a uint32 offset table")
    blob = np.empty(int(offsets[-1]), dtype=np.uint8)
    blob[:header] = np.frombuffer(offsets.astype(OFFSET_DTYPE).tobytes(), dtype=np.uint8)
    for t, frame in enumerate(frames):
        blob[offsets[t] : offsets[t + 1]] = np.frombuffer(frame, dtype=np.uint8)
    return blob


def frames_row(frames: FrameList, ptr: int, blob: np.ndarray) -> tuple[int, ...]:
    """The metadata row (``FRAMES_META``: ptr, size, num_frames, height, width, crc32) of
    ``blob`` (``pack_frames(frames.frames)``) stored at file offset ``ptr``."""
    return (ptr, blob.size, len(frames.frames), frames.height, frames.width, zlib.crc32(blob))


def unpack_frames(blob: np.ndarray, num_frames: int) -> list[bytes]:
    """The inverse of :func:`pack_frames`; ``ValueError`` when the offset table is damaged."""
    header = OFFSET_DTYPE.itemsize * (num_frames + 1)
    if num_frames < 1 or len(blob) < header:
        raise ValueError(f"a blob of {len(blob)} bytes cannot hold {num_frames} frames")
    offsets = np.frombuffer(blob[:header].tobytes(), OFFSET_DTYPE).astype(np.int64)
    if offsets[0] != header or (np.diff(offsets) < 0).any() or offsets[-1] > len(blob):
        raise ValueError("its frame offset table is damaged")
    return [blob[offsets[t] : offsets[t + 1]].tobytes() for t in range(num_frames)]


def packed_size(frames: Sequence[bytes]) -> int:
    """Bytes :func:`pack_frames` will produce (to choose a page size before writing)."""
    return OFFSET_DTYPE.itemsize * (len(frames) + 1) + sum(len(f) for f in frames)
