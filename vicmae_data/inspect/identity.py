"""Which .beton a file is: its size, sample count, class list and a fingerprint of its tables.

A training run records this for every file it reads, so that resuming it on another file
under the same name (a re-conversion, the val split copied over the train split, another
dataset) is noticed instead of silently training on. The fingerprint hashes what describes
every sample without reading the samples themselves: the header, the field descriptors
(whose label field points at the class list, with the list's CRC32), the metadata table
(one row per sample: where its frames are, how many, their size and the CRC32 of their
bytes, its label) and the allocation table. Those tables are ~50 bytes per sample, so a
1 TB Kinetics file costs a read of ~25 MB, whatever the size of its frames::

    from vicmae_data.inspect.identity import beton_identity

    before = beton_identity("k400.beton")
    ...
    beton_identity("k400.beton").differences(before)  # [] when it is the same file
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from typing import Any

from vicmae_data.format.beton import BetonFile

__all__ = ["BetonIdentity", "beton_fingerprint", "beton_identity"]


@dataclass(frozen=True)
class BetonIdentity:
    """What identifies a .beton (see the module docstring); JSON-friendly via :meth:`to_json`."""

    path: str
    bytes: int
    samples: int
    fingerprint: str  # blake2b-128 of the tables, hex
    classes: dict[int, str]  # label -> class name (the stored class list)

    def to_json(self) -> dict[str, Any]:
        return dict(asdict(self), classes={str(k): v for k, v in self.classes.items()})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BetonIdentity:
        return cls(
            path=str(data["path"]),
            bytes=int(data["bytes"]),
            samples=int(data["samples"]),
            fingerprint=str(data["fingerprint"]),
            classes={int(k): str(v) for k, v in data["classes"].items()},
        )

    def differences(self, before: BetonIdentity) -> list[str]:
        """What changed since ``before``, one phrase per difference ([] when nothing did)."""
        out = []
        if self.path != before.path:
            out.append(f"path {before.path} -> {self.path}")
        if self.samples != before.samples:
            out.append(f"{before.samples:,} -> {self.samples:,} samples")
        if self.bytes != before.bytes:
            out.append(f"size {before.bytes:,} -> {self.bytes:,} bytes")
        if self.fingerprint != before.fingerprint:
            out.append(
                f"contents (fingerprint of its tables) {before.fingerprint[:12]} -> "
                f"{self.fingerprint[:12]}"
            )
        if self.classes != before.classes:
            out.append(_class_change(before.classes, self.classes))
        return out


def _class_change(a: dict[int, str], b: dict[int, str]) -> str:
    first = min(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return (
        f"class list {len(a)} -> {len(b)} classes (label {first}: {_name(a.get(first))} -> "
        f"{_name(b.get(first))})"
    )


def _name(name: str | None) -> str:
    return "absent" if name is None else repr(name)


def beton_fingerprint(beton: BetonFile) -> str:
    """blake2b-128 (hex) of the header, field descriptors, metadata and allocation tables."""
    tables = beton.tables
    h = hashlib.blake2b(digest_size=16)
    for part in (tables.header, tables.descriptors, tables.metadata, tables.alloc_table()):
        h.update(part.tobytes())
    return h.hexdigest()


def beton_identity(path: str | os.PathLike) -> BetonIdentity:
    """The identity of the .beton at ``path`` (:class:`~vicmae_data.format.beton.BetonError`
    when it is not a readable one)."""
    beton = BetonFile(path)
    return BetonIdentity(
        path=str(path),
        bytes=beton.file_bytes,
        samples=len(beton),
        fingerprint=beton_fingerprint(beton),
        # The stored class list; for a file converted before lists were stored, the
        # classes its samples name.
        classes=beton.class_names(),
    )
