"""The .beton layout vicmae writes, and raw (undecoded) access to it.

Every .beton vicmae writes has the same three fields, in this order:

- ``frames``: :class:`~vicmae_data.format.frames.WebPFramesField`, the WebP frame list;
- ``label``: ``IntField``, the class index (into the sorted class names of the source split);
- ``meta``: ``JSONField``, a dict with at least ``source`` (path or id of the source item),
  ``class_name``, ``dataset``, ``fps`` (stored frame rate, 0.0 for images),
  ``num_frames``, ``height``, ``width``, and ``partial`` (decoding stopped part-way).

The class list (label -> name) of the whole dataset is stored in the file's manifest
(:mod:`vicmae_data.format.manifest`); for files written before manifests it is rebuilt
from the ``class_name`` of the samples. :class:`BetonFile` reads the tables with NumPy
(:mod:`vicmae_data.format.tables`), not ffcv, so inspecting a file starts at once; the
writer (:mod:`vicmae_data.write.beton_writer`) writes them the same way.

It checks the tables before anything touches the data: a header, field table or
allocation table that does not hold together with the file's size is a
:class:`BetonError` naming what is wrong; a sample whose table row points outside its
allocation, or holds an impossible frame count or size, is listed by
:meth:`BetonFile.damaged_rows` (the loader leaves it out, ``verify`` names it, reading it
is a :class:`BetonError`).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from vicmae_data.format.frame_blob import FrameList, packed_size, unpack_frames
from vicmae_data.format.manifest import Manifest, read_manifest
from vicmae_data.format.tables import TableError, read_tables
from vicmae_data.oserror import not_a_file

MAX_WEBP_SIDE = 16383  # libwebp's largest picture side


class BetonError(ValueError):
    """The file is missing, not a .beton, not one vicmae wrote, or damaged."""


@dataclass(frozen=True)
class Sample:
    """One converted item, ready to be written."""

    frames: FrameList
    label: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return packed_size(self.frames.frames)


def encode_meta(meta: dict[str, Any]) -> bytes:
    """A sample's meta as stored: what ffcv's ``JSONField`` writes (``json.dumps`` with its
    defaults, then a NUL byte), so ffcv's readers and ``JSONField.unpack`` read it."""
    return (json.dumps(meta) + "\0").encode("utf-8")


def custom_fields() -> dict[str, type]:
    """What ffcv's ``Reader``/``Loader`` need to know about fields it does not ship."""
    from vicmae_data.format.frames import WebPFramesField

    return {"frames": WebPFramesField}


class BetonFile:
    """Read-only raw access to a vicmae .beton: metadata, labels, meta dicts, frame bytes.

    No decoding happens here; this is what ``info``, ``merge`` and ``read_sample`` build on.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        why = not_a_file(self.path)
        if why is not None:  # a folder or a FIFO is named as such, and a FIFO never opened
            raise BetonError(f"{self.path}: {why}")
        try:
            self.tables = read_tables(self.path)
            allocations = self.tables.checked_allocations()
        except (TableError, OSError) as exc:
            raise BetonError(f"{self.path}: not a readable .beton file ({exc})") from None
        self._alloc_ptrs = np.asarray(allocations["ptr"])
        self._alloc_sizes = np.asarray(allocations["size"])
        self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        self._columns = {name: self.tables.column(name) for name in self.tables.field_names}
        self._by_source: dict[str, int] | None = None
        self._manifest: Manifest | bool | None = False  # False: not read yet

    def _column(self, name: str) -> np.ndarray:
        return self._columns[name]

    def __len__(self) -> int:
        return self.tables.num_samples

    @property
    def page_size(self) -> int:
        return self.tables.page_size

    @property
    def file_bytes(self) -> int:
        return self.tables.file_bytes

    @property
    def stored_bytes(self) -> int:
        """Bytes of every allocation (frame blobs and JSON metas)."""
        return int(self._alloc_sizes.sum())

    @property
    def table_bytes(self) -> int:
        """Header, field descriptors, metadata table, manifest and allocation table."""
        tables = self.tables.data_start + (self.file_bytes - self.tables.data_end)
        if self.manifest is not None and len(self._alloc_ptrs):
            # The manifest (and its alignment) sits after the last allocation.
            tables += self.tables.data_end - int((self._alloc_ptrs + self._alloc_sizes).max())
        return tables

    def _allocated(self, ptr: np.ndarray, size: np.ndarray) -> np.ndarray:
        """Whether each (ptr, size) lies in the allocation that starts at ptr."""
        if len(self._alloc_ptrs) == 0:
            return np.zeros(len(ptr), dtype=bool)
        k = np.minimum(np.searchsorted(self._alloc_ptrs, ptr), len(self._alloc_ptrs) - 1)
        return (self._alloc_ptrs[k] == ptr) & (size <= self._alloc_sizes[k])

    @cached_property
    def _damage(self) -> dict[int, str]:
        rows, metas = self.frames_meta, self._column("meta")
        T = rows["num_frames"].astype(np.int64)
        H, W = rows["height"], rows["width"]
        checks = [
            (~self._allocated(rows["ptr"], rows["size"]),
             "its frame blob is not where the allocation table says"),
            (T < 1, "it has no frames"),
            (rows["size"] < 4 * (T + 1), "its frame table is larger than its blob"),
            ((H < 1) | (H > MAX_WEBP_SIDE) | (W < 1) | (W > MAX_WEBP_SIDE),
             "its frame size is impossible"),
            (~self._allocated(metas["ptr"], metas["size"]),
             "its JSON meta is not where the allocation table says"),
        ]  # fmt: skip
        damage: dict[int, str] = {}
        for bad, reason in reversed(checks):  # the first check's reason wins
            for i in np.flatnonzero(bad).tolist():
                damage[i] = reason
        return dict(sorted(damage.items()))

    def damaged_rows(self) -> dict[int, str]:
        """Samples whose table row cannot be read safely: index -> reason."""
        return self._damage

    def _check(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        reason = self._damage.get(index)
        if reason is not None:
            raise BetonError(f"{self.path}: sample {index} is damaged: {reason}")

    @property
    def manifest(self) -> Manifest | None:
        """The stored class list and contents (None for files written before manifests)."""
        if self._manifest is False:
            try:
                self._manifest = read_manifest(self.tables)
            except TableError as exc:
                raise BetonError(f"{self.path}: {exc}") from None
        return self._manifest  # type: ignore[return-value]

    @property
    def frames_meta(self) -> np.ndarray:
        """Structured array: ptr, size, num_frames, height, width, crc32 per sample."""
        return self._column("frames")

    @property
    def labels(self) -> np.ndarray:
        return self._column("label")

    def blob(self, index: int) -> np.ndarray:
        """Sample ``index``'s frame blob as stored (offset table, then the WebP frames)."""
        self._check(index)
        row = self.frames_meta[index]
        return self._data[int(row["ptr"]) : int(row["ptr"]) + int(row["size"])]

    def frame_bytes(self, index: int) -> list[bytes]:
        """The WebP bytes of every frame of sample ``index``."""
        try:
            return unpack_frames(self.blob(index), int(self.frames_meta[index]["num_frames"]))
        except ValueError as exc:
            raise BetonError(f"{self.path}: sample {index}: {exc}") from None

    def checksum_ok(self, index: int) -> bool:
        """Whether sample ``index``'s frame blob still has the CRC32 it was written with."""
        return zlib.crc32(self.blob(index)) == int(self.frames_meta[index]["crc32"])

    def meta(self, index: int) -> dict[str, Any]:
        """Sample ``index``'s JSON meta (:class:`BetonError` when it is not readable JSON)."""
        self._check(index)
        row = self._column("meta")[index]
        raw = bytes(self._data[int(row["ptr"]) : int(row["ptr"]) + int(row["size"])])
        # ffcv's JSONField stores UTF-8 JSON followed by a NUL byte.
        try:
            value = json.loads(raw.split(b"\0", 1)[0].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BetonError(f"{self.path}: sample {index}: unreadable meta ({exc})") from None
        if not isinstance(value, dict):
            raise BetonError(f"{self.path}: sample {index}: its meta is not a JSON object")
        return value

    def sample(self, index: int) -> Sample:
        """Sample ``index`` as written (frames still WebP-encoded)."""
        self._check(index)
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
                if i not in self._damage:
                    self._by_source.setdefault(str(self.meta(i).get("source", "")), i)
        try:
            return self._by_source[source]
        except KeyError:
            raise KeyError(f"{self.path}: no sample with source {source!r}") from None

    def image_flags(self) -> np.ndarray:
        """bool ``[len(self)]``: True where the sample is a still image. From the manifest
        (a one-frame video is a video); for a file without one, a one-frame sample."""
        if self.manifest is not None:
            return self.manifest.image_flags(len(self))
        return np.asarray(self.frames_meta["num_frames"]) == 1

    def class_names(self) -> dict[int, str]:
        """Label -> class name: the stored class list (every class of the dataset), or for
        a file without a manifest, the ``class_name`` of the labels its samples use."""
        if self.manifest is not None:
            return dict(enumerate(self.manifest.classes))
        names: dict[int, str] = {}
        for i in range(len(self)):
            label = int(self.labels[i])
            if label not in names and i not in self._damage:
                names[label] = str(self.meta(i).get("class_name", label))
        return dict(sorted(names.items()))
