"""The tables of a .beton (ffcv 1.0.2's format) read with NumPy alone.

ffcv's ``Reader`` is ``import ffcv``, which imports torch, numba and OpenCV: seconds before
the first byte is read. ``vicmae-data info``, ``verify`` and ``preview`` need only the
tables, so they read them here with the same dtypes (``tests/test_manifest.py`` checks
them against ``ffcv.types`` and ``ffcv.reader.Reader`` on real files)::

    header | field descriptors | metadata table (one row per sample) | data | allocation table

The allocation table runs from ``header["alloc_table_ptr"]`` to the end of the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 2  # ffcv.types.CURRENT_VERSION
HEADER = np.dtype(
    [
        ("version", "<u2"),
        ("num_fields", "<u2"),
        ("page_size", "<u4"),
        ("num_samples", "<u8"),
        ("alloc_table_ptr", "<u8"),
    ],
    align=True,
)
ARGUMENT_BYTES = 1024  # each field descriptor's free-form argument block
FIELD_DESC = np.dtype(
    [("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (ARGUMENT_BYTES,)))],
    align=True,
)
ALLOC = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])

# The metadata row of each field vicmae writes (ffcv's IntField, JSONField, and ours).
FRAMES_META = np.dtype(
    [
        ("ptr", "<u8"),
        ("size", "<u8"),
        ("num_frames", "<u4"),
        ("height", "<u2"),
        ("width", "<u2"),
        ("crc32", "<u4"),
    ]
)
INT_META = np.dtype("<i8")
JSON_META = np.dtype([("ptr", "<u8"), ("size", "<u8")])
# ffcv's type ids (ffcv.types.TYPE_ID_HANDLER): 255 is a custom field.
FIELDS = (("frames", 255, FRAMES_META), ("label", 1, INT_META), ("meta", 5, JSON_META))
METADATA = np.dtype([("", meta) for _, _, meta in FIELDS], align=True)  # columns f0, f1, f2


class TableError(ValueError):
    """The file is not a .beton of vicmae's three fields (the message says why)."""


@dataclass(frozen=True)
class Tables:
    """A .beton's header, field descriptors, metadata table and size (no sample data)."""

    path: Path
    header: np.void
    descriptors: np.ndarray  # FIELD_DESC, one per field
    metadata: np.ndarray  # METADATA, one row per sample (read-only)
    file_bytes: int

    @property
    def num_samples(self) -> int:
        return int(self.header["num_samples"])

    @property
    def page_size(self) -> int:
        return int(self.header["page_size"])

    @property
    def field_names(self) -> list[str]:
        names = (bytes(d["name"]).split(b"\0", 1)[0] for d in self.descriptors)
        return [name.decode("ascii", "replace") for name in names]

    def column(self, name: str) -> np.ndarray:
        """The metadata column of field ``name`` (``frames``, ``label`` or ``meta``)."""
        return self.metadata[f"f{self.field_names.index(name)}"]

    @property
    def data_start(self) -> int:
        """First byte after the metadata table."""
        return HEADER.itemsize + self.descriptors.nbytes + self.metadata.nbytes

    @property
    def data_end(self) -> int:
        """Where the allocation table starts."""
        return int(self.header["alloc_table_ptr"])

    def alloc_table(self) -> np.ndarray:
        """Every allocation (sample id, pointer, size), read on demand."""
        return np.fromfile(self.path, dtype=ALLOC, offset=self.data_end)

    def checked_allocations(self) -> np.ndarray:
        """The allocation table, sorted by pointer, after checking every entry lies in the
        data region; :class:`TableError` otherwise (a damaged table, a file cut short)."""
        table = self.alloc_table()
        ptr, size = table["ptr"], table["size"]
        lo, hi = np.uint64(self.data_start), np.uint64(self.data_end)
        outside = (ptr < lo) | (ptr > hi)
        outside |= size > np.where(outside, np.uint64(0), hi - np.minimum(ptr, hi))
        if outside.any():
            raise TableError(
                f"allocation table entry {int(np.argmax(outside))} (of {int(outside.sum())} "
                "such) points outside the data: the file was cut short or damaged"
            )
        return table[np.argsort(ptr, kind="stable")]


def read_tables(path: str | os.PathLike) -> Tables:
    """Read the tables of ``path``; :class:`TableError` when it is not a vicmae .beton."""
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER.itemsize:
        raise TableError(f"{size} bytes: too short for a .beton header")
    header = np.fromfile(path, dtype=HEADER, count=1)[0]
    if int(header["version"]) != FORMAT_VERSION:
        raise TableError(f"format version {int(header['version'])}, not ffcv's {FORMAT_VERSION}")
    num_fields, num_samples = int(header["num_fields"]), int(header["num_samples"])
    tables_end = HEADER.itemsize + num_fields * FIELD_DESC.itemsize
    tables_end += num_samples * METADATA.itemsize
    if num_fields != len(FIELDS) or tables_end > size:
        raise TableError(
            f"header announces {num_fields} fields and {num_samples} samples, "
            f"which do not fit {size} bytes"
        )
    table_ptr = int(header["alloc_table_ptr"])
    if not tables_end <= table_ptr <= size:
        raise TableError(f"allocation table pointer {table_ptr} is outside the file")
    if (size - table_ptr) % ALLOC.itemsize:
        raise TableError("the allocation table is not whole: the file was cut short or damaged")
    page = int(header["page_size"])
    if page < 1 or page & (page - 1):
        raise TableError(f"page size {page} is not a power of two")
    descriptors = np.fromfile(path, dtype=FIELD_DESC, count=num_fields, offset=HEADER.itemsize)
    tables = Tables(path, header, descriptors, np.empty(0, METADATA), size)
    want = [(name, type_id) for name, type_id, _ in FIELDS]
    got = list(zip(tables.field_names, (int(t) for t in descriptors["type_id"]), strict=True))
    if got != want:
        raise TableError(f"fields {tables.field_names} are not vicmae's {[n for n, _ in want]}")
    offset = HEADER.itemsize + descriptors.nbytes
    metadata = np.fromfile(path, dtype=METADATA, count=num_samples, offset=offset)
    metadata.setflags(write=False)
    return Tables(path, header, descriptors, metadata, size)
