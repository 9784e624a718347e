"""The manifest of a .beton: its class list and what went into it, stored inside the file.

A label is an index; what it means (``3`` is ``"bowling"``) must travel with the file, the
same for every split of a dataset, so that a linear probe can check that its training and
validation files agree. Per-sample ``meta["class_name"]`` cannot tell which classes a file
*lacks*, and a sidecar file gets lost, so the class list lives in the .beton itself:

- a UTF-8 JSON blob (:class:`Manifest`) in the data region, between the last sample's
  bytes and the allocation table; no allocation lists it, so ffcv's readers never see it;
- a 36-byte record in the ``label`` field's descriptor arguments (1024 bytes that ffcv's
  ``IntField`` leaves unused) pointing at it: magic, pointer, size, CRC32.

The file still opens with ffcv's ``Reader`` and ``Loader`` as before (tested).
The writer stores it with :func:`encode_manifest`; :func:`read_manifest` reads it back,
or None for a file written before manifests existed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vicmae_data.format.tables import HEADER, TableError, Tables

MAGIC = b"vicmae-manifest\0"  # 16 bytes
RECORD = np.dtype([("magic", "S16"), ("ptr", "<u8"), ("size", "<u8"), ("crc32", "<u4")])
MANIFEST_VERSION = 1
LABEL_FIELD = 1  # frames, label, meta


@dataclass(frozen=True)
class Manifest:
    """What a .beton holds, beyond its samples.

    ``classes[label]`` is the class as the dataset names it (Kinetics' label, Moments in
    Time's category, ImageNet's wnid, a class folder's name): the one list of the whole
    dataset, the same for every split. ``titles[label]`` is a human-readable name where the
    dataset ships one (ImageNet's ``LOC_synset_mapping.txt``), else empty.
    ``images`` lists the runs ``[start, stop)`` of samples that are still images (a
    one-frame video is still a video). ``sources`` says what went in: one entry per input
    dataset (``dataset``, ``split``, ``start``, ``stop``, ``label_offset``, ``num_classes``,
    and ``labelled: false`` for a split that ships without labels, whose samples' label is
    -1, such as Something-Something v2's test split).
    """

    classes: tuple[str, ...]
    titles: tuple[str, ...] = ()
    images: tuple[tuple[int, int], ...] = ()
    sources: tuple[dict[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.titles and len(self.titles) != len(self.classes):
            raise ValueError(f"{len(self.titles)} titles for {len(self.classes)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def title(self, label: int) -> str:
        """The readable name of ``label``: its title where there is one, else its class."""
        if self.titles and self.titles[label]:
            return self.titles[label]
        return self.classes[label]

    def image_flags(self, num_samples: int) -> np.ndarray:
        """bool ``[num_samples]``: True where the sample is a still image."""
        flags = np.zeros(num_samples, dtype=bool)
        for start, stop in self.images:
            flags[start:stop] = True
        return flags

    @property
    def unlabelled(self) -> bool:
        """Whether some samples come from a split that ships without labels."""
        return any(s.get("labelled", True) is False for s in self.sources)

    def labelled_flags(self, num_samples: int) -> np.ndarray:
        """bool ``[num_samples]``: False where the sample's split ships without labels."""
        flags = np.ones(num_samples, dtype=bool)
        for s in self.sources:
            if s.get("labelled", True) is False:
                flags[int(s["start"]) : int(s["stop"])] = False
        return flags

    def select(self, rows: Sequence[int] | np.ndarray) -> Manifest:
        """The manifest of a file holding only samples ``rows`` (increasing) of this one."""
        rows = np.asarray(rows, dtype=np.int64)
        total = int(rows.max()) + 1 if len(rows) else 0
        for s in self.sources:
            total = max(total, int(s["stop"]))
        flags = self.image_flags(total)[rows]
        sources = []
        for s in self.sources:
            start = int(np.searchsorted(rows, int(s["start"])))
            stop = int(np.searchsorted(rows, int(s["stop"])))
            sources.append(dict(s, start=start, stop=stop))
        return replace(self, images=image_runs(flags), sources=tuple(sources))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": MANIFEST_VERSION, "classes": list(self.classes)}
        if self.titles:
            out["titles"] = list(self.titles)
        out["images"] = [list(r) for r in self.images]
        out["sources"] = [dict(s) for s in self.sources]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if int(data.get("version", 0)) != MANIFEST_VERSION:
            raise ValueError(f"manifest version {data.get('version')!r} is not {MANIFEST_VERSION}")
        return cls(
            classes=tuple(str(c) for c in data["classes"]),
            titles=tuple(str(t) for t in data.get("titles", ())),
            images=tuple((int(a), int(b)) for a, b in data.get("images", ())),
            sources=tuple(dict(s) for s in data.get("sources", ())),
        )


def image_runs(flags: Sequence[bool]) -> tuple[tuple[int, int], ...]:
    """The runs ``[start, stop)`` of True in ``flags`` (see :attr:`Manifest.images`)."""
    a = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(a))
    return tuple((int(s), int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True))


def encode_manifest(manifest: Manifest, descriptors: np.ndarray, ptr: int) -> bytes:
    """The manifest's bytes, to be written at file offset ``ptr``; the record pointing at
    them is put into ``descriptors`` (the field descriptor table, before it is written)."""
    blob = json.dumps(manifest.to_json(), separators=(",", ":")).encode("ascii")
    record = np.zeros(1, dtype=RECORD)
    record["magic"], record["ptr"], record["size"] = MAGIC, ptr, len(blob)
    record["crc32"] = zlib.crc32(blob)
    args = descriptors[LABEL_FIELD]["arguments"]
    args[: RECORD.itemsize] = np.frombuffer(record.tobytes(), dtype=np.uint8)
    return blob


def read_manifest(tables: Tables) -> Manifest | None:
    """The manifest of an open file, None if it has none; :class:`TableError` if damaged."""
    args = np.ascontiguousarray(tables.descriptors[LABEL_FIELD]["arguments"])
    record = np.frombuffer(args.tobytes()[: RECORD.itemsize], dtype=RECORD)[0]
    if bytes(record["magic"]).ljust(16, b"\0") != MAGIC:
        return None
    ptr, size = int(record["ptr"]), int(record["size"])
    data_start = HEADER.itemsize + tables.descriptors.nbytes + tables.metadata.nbytes
    if not (data_start <= ptr and ptr + size <= int(tables.header["alloc_table_ptr"])):
        raise TableError(f"the manifest pointer ({ptr}, {size} bytes) is outside the data")
    with open(tables.path, "rb") as fh:
        fh.seek(ptr)
        blob = fh.read(size)
    if len(blob) != size or zlib.crc32(blob) != int(record["crc32"]):
        raise TableError("the manifest (class list) fails its CRC32 check")
    try:
        return Manifest.from_json(json.loads(blob.decode("utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise TableError(f"unreadable manifest ({exc})") from None


def merged_manifest(
    manifests: Sequence[Manifest | None], lengths: Sequence[int], offsets: Sequence[int]
) -> Manifest | None:
    """The manifest of inputs written end to end, input ``k``'s labels shifted by
    ``offsets[k]``; None when an input has none (its class list is unknown)."""
    if not manifests or any(m is None for m in manifests):
        return None
    size = max(off + m.num_classes for m, off in zip(manifests, offsets, strict=True))  # type: ignore[union-attr]
    classes: list[str | None] = [None] * size
    titles: list[str] = [""] * size
    images: list[tuple[int, int]] = []
    sources: list[dict[str, Any]] = []
    start = 0
    for m, n, off in zip(manifests, lengths, offsets, strict=True):
        assert m is not None
        for i, name in enumerate(m.classes):
            if classes[off + i] is None:  # --relabel keep over different lists: first wins
                classes[off + i] = name
                titles[off + i] = m.titles[i] if m.titles else ""
        images += [(a + start, b + start) for a, b in m.images]
        for s in m.sources or ({"start": 0, "stop": n},):
            shifted = dict(s, start=int(s["start"]) + start, stop=int(s["stop"]) + start)
            shifted["label_offset"] = int(s.get("label_offset", 0)) + off
            sources.append(shifted)
        start += n
    return Manifest(
        classes=tuple("?" if c is None else c for c in classes),
        titles=tuple(titles) if any(titles) else (),
        images=image_runs(Manifest((), images=tuple(images)).image_flags(start)),
        sources=tuple(sources),
    )
