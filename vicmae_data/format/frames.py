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

from typing import TYPE_CHECKING

import numpy as np
from ffcv.fields.base import ARG_TYPE, Field

from vicmae_data.format.frame_blob import (  # re-exported: the writer and tests use them
    OFFSET_DTYPE,
    FrameList,
    frames_row,
    pack_frames,
    packed_size,
    unpack_frames,
)
from vicmae_data.format.tables import FRAMES_META

if TYPE_CHECKING:
    from ffcv.pipeline.operation import Operation

__all__ = [
    "OFFSET_DTYPE",
    "FrameList",
    "WebPFramesField",
    "pack_frames",
    "packed_size",
    "unpack_frames",
]


class WebPFramesField(Field):
    """A variable-length list of WebP frames of one size (a video; an image is T = 1).

    vicmae's writer (:mod:`vicmae_data.write.beton_writer`) stores the same bytes without
    ffcv; :meth:`encode` lets ffcv's own ``DatasetWriter`` write it too. Reading goes through
    the decoder returned by :meth:`get_decoder_class`, which samples frame indices and
    decodes only those.
    """

    @property
    def metadata_type(self) -> np.dtype:
        return FRAMES_META

    @staticmethod
    def from_binary(binary: ARG_TYPE) -> WebPFramesField:
        return WebPFramesField()

    def to_binary(self) -> ARG_TYPE:
        return np.zeros(1, dtype=ARG_TYPE)[0]

    def encode(self, destination, field: FrameList, malloc) -> None:
        blob = pack_frames(field.frames)
        ptr, buffer = malloc(blob.size)
        buffer[:] = blob
        destination[0] = frames_row(field, ptr, blob)

    def get_decoder_class(self) -> type[Operation]:
        from vicmae_data.load.decoder import WebPFramesDecoder

        return WebPFramesDecoder
