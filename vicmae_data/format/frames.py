"""The WebP frame-list field: one video (or image, T = 1) per sample.

On disk, a sample's frames are one contiguous blob inside an FFCV page::

    offsets: uint32[T + 1]   offsets[0] == 4 * (T + 1); frame t is blob[offsets[t]:offsets[t + 1]]
    frame 0 WebP bytes, frame 1 WebP bytes, ...

and the per-sample metadata row (fixed size, in the .beton's metadata table) holds the
blob's pointer and size, the frame count and the stored frame size, so a sampler can pick
frame indices and a decoder can size its buffers without touching the blob, and the CRC32
of the blob: WebP has no checksum of its own, and most damage inside a frame's image data
still decodes, so without it `vicmae-data verify` could not tell a damaged frame from a
good one.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from ffcv.fields.base import ARG_TYPE, Field

if TYPE_CHECKING:
    from ffcv.pipeline.operation import Operation

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


def unpack_frames(blob: np.ndarray, num_frames: int) -> list[bytes]:
    """The inverse of :func:`pack_frames`."""
    offsets = np.frombuffer(
        blob[: OFFSET_DTYPE.itemsize * (num_frames + 1)].tobytes(), OFFSET_DTYPE
    )
    return [blob[offsets[t] : offsets[t + 1]].tobytes() for t in range(num_frames)]


def packed_size(frames: Sequence[bytes]) -> int:
    """Bytes :func:`pack_frames` will produce (to choose a page size before writing)."""
    return OFFSET_DTYPE.itemsize * (len(frames) + 1) + sum(len(f) for f in frames)


class WebPFramesField(Field):
    """A variable-length list of WebP frames of one size (a video; an image is T = 1).

    The writer expects a :class:`FrameList`. Reading goes through the decoder returned by
    :meth:`get_decoder_class`, which samples frame indices and decodes only those.
    """

    @property
    def metadata_type(self) -> np.dtype:
        return np.dtype(
            [
                ("ptr", "<u8"),
                ("size", "<u8"),
                ("num_frames", "<u4"),
                ("height", "<u2"),
                ("width", "<u2"),
                ("crc32", "<u4"),
            ]
        )

    @staticmethod
    def from_binary(binary: ARG_TYPE) -> WebPFramesField:
        return WebPFramesField()

    def to_binary(self) -> ARG_TYPE:
        return np.zeros(1, dtype=ARG_TYPE)[0]

    def encode(self, destination, field: FrameList, malloc) -> None:
        blob = pack_frames(field.frames)
        ptr, buffer = malloc(blob.size)
        buffer[:] = blob
        destination["ptr"] = ptr
        destination["size"] = blob.size
        destination["num_frames"] = len(field.frames)
        destination["height"] = field.height
        destination["width"] = field.width
        destination["crc32"] = zlib.crc32(blob)

    def get_decoder_class(self) -> type[Operation]:
        from vicmae_data.load.decoder import WebPFramesDecoder

        return WebPFramesDecoder
