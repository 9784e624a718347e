"""The .beton layout vicmae writes, and raw (undecoded) access to it.

Every .beton vicmae writes has the same three fields, in this order:

- ``frames``: :class:`~vicmae_data.format.frames.WebPFramesField`, the WebP frame list;
- ``label``: ``IntField``, the class index (into the sorted class names of the source split);
- ``meta``: ``JSONField``, a dict with at least ``source`` (path or id of the source item),
  ``class_name``, ``dataset``, ``fps`` (stored frame rate, 0.0 for images),
  ``num_frames``, ``height``, ``width``, and ``partial`` (decoding stopped part-way).

The class list (index -> name) is rebuilt from the ``class_name`` of the samples, so it
travels inside the file with no sidecar to lose.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ffcv.fields import IntField, JSONField
from ffcv.reader import Reader

from vicmae_data.format.frames import FrameList, WebPFramesField, packed_size, unpack_frames


class BetonError(ValueError):
    """The file is missing, not a .beton, or not one vicmae wrote."""


@dataclass(frozen=True)
class Sample:
    """One converted item, ready to be written."""

    frames: FrameList
    label: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return packed_size(self.frames.frames)


def beton_fields() -> dict[str, Any]:
    """The writer's field map (order matters: it is the on-disk order)."""
    return {"frames": WebPFramesField(), "label": IntField(), "meta": JSONField()}


def custom_fields() -> dict[str, type]:
    """What ffcv's ``Reader``/``Loader`` need to know about fields it does not ship."""
    return {"frames": WebPFramesField}


class BetonFile:
    """Read-only raw access to a vicmae .beton: metadata, labels, meta dicts, frame bytes.

    No decoding happens here; this is what ``info``, ``merge`` and ``read_sample`` build on.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BetonError(f"{self.path}: no such file")
        try:
            self.reader = Reader(str(self.path), custom_fields())
        except Exception as exc:  # ffcv raises AssertionError/ValueError/IndexError on junk
            raise BetonError(f"{self.path}: not a readable .beton file ({exc})") from None
        if list(self.reader.field_names) != list(beton_fields()):
            raise BetonError(
                f"{self.path}: fields {self.reader.field_names} are not vicmae's "
                f"{list(beton_fields())}"
            )
        self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        # ffcv's metadata table names its columns f0, f1, ... in field order.
        self._columns = {name: f"f{i}" for i, name in enumerate(self.reader.field_names)}
        self._by_source: dict[str, int] | None = None

    def _column(self, name: str) -> np.ndarray:
        return self.reader.metadata[self._columns[name]]

    def __len__(self) -> int:
        return int(self.reader.num_samples)

    @property
    def page_size(self) -> int:
        return int(self.reader.page_size)

    @property
    def frames_meta(self) -> np.ndarray:
        """Structured array: ptr, size, num_frames, height, width, crc32 per sample."""
        return self._column("frames")

    @property
    def labels(self) -> np.ndarray:
        return self._column("label")

    def blob(self, index: int) -> np.ndarray:
        """Sample ``index``'s frame blob as stored (offset table, then the WebP frames)."""
        row = self.frames_meta[index]
        return self._data[int(row["ptr"]) : int(row["ptr"]) + int(row["size"])]

    def frame_bytes(self, index: int) -> list[bytes]:
        """The WebP bytes of every frame of sample ``index``."""
        return unpack_frames(self.blob(index), int(self.frames_meta[index]["num_frames"]))

    def checksum_ok(self, index: int) -> bool:
        """Whether sample ``index``'s frame blob still has the CRC32 it was written with."""
        return zlib.crc32(self.blob(index)) == int(self.frames_meta[index]["crc32"])

    def meta(self, index: int) -> dict[str, Any]:
        row = self._column("meta")[index]
        raw = self._data[int(row["ptr"]) : int(row["ptr"]) + int(row["size"])]
        return JSONField.unpack(np.asarray(raw))

    def sample(self, index: int) -> Sample:
        """Sample ``index`` as written (frames still WebP-encoded)."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        row = self.frames_meta[index]
        frames = FrameList(self.frame_bytes(index), int(row["height"]), int(row["width"]))
        return Sample(frames, int(self.labels[index]), self.meta(index))

    def index_of(self, source: str) -> int:
        """The index of the sample whose ``meta["source"]`` is ``source``.

        Reads every sample's JSON meta on the first call (a small read per sample), then
        answers from a table. Raises ``KeyError`` when no sample has that source.
        """
        if self._by_source is None:
            self._by_source = {}
            for i in range(len(self)):
                self._by_source.setdefault(str(self.meta(i).get("source", "")), i)
        try:
            return self._by_source[source]
        except KeyError:
            raise KeyError(f"{self.path}: no sample with source {source!r}") from None

    def class_names(self) -> dict[int, str]:
        """Index -> name, from the samples' ``class_name`` metadata."""
        names: dict[int, str] = {}
        for i in range(len(self)):
            label = int(self.labels[i])
            if label not in names:
                names[label] = str(self.meta(i).get("class_name", label))
        return dict(sorted(names.items()))
