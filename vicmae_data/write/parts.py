"""The resume cache of a conversion: one small file per converted (or skipped) item.

``FILE.beton.parts/`` sits next to the output. Each item's result, WebP frames and all,
is written to a temporary name and renamed, so a killed conversion leaves only whole
parts; rerunning the same command skips every item that has a part (skipped items
too, so a bad file is not re-tried). ``key.json`` holds the settings the parts were made
with: a different key empties the cache. After the .beton is assembled the folder goes.

A part file is ``MAGIC``, a little-endian uint32 header length, a JSON header (status,
reason, label, meta, frame sizes) and the frame bytes back to back. Reading the header
alone is cheap (the report and the page size need only that). This module must stay
light to import: worker processes load it (no ffcv, no torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vicmae_data.atomic import atomic_open, write_text_atomic

log = logging.getLogger(__name__)

MAGIC = b"VICMAE-PART-1\n"
KEY_FILE = "key.json"


@dataclass(frozen=True)
class Part:
    """One item's cached result: ``status`` "ok" (with frames) or "skip" (with a reason)."""

    status: str
    header: dict[str, Any]
    frames: Sequence[bytes] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def parts_dir_for(out: str | os.PathLike) -> Path:
    """Where the resume cache of output ``out`` lives."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def part_name(source: str) -> str:
    """A stable file name for an item, from its source id (ids may hold any character)."""
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()
    return f"{digest[:2]}/{digest}.part"


def write_part(
    path: str | os.PathLike, status: str, header: dict[str, Any], frames: Sequence[bytes] = ()
) -> None:
    """Write one part atomically (:func:`vicmae_data.atomic.atomic_open`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = dict(header, status=status, sizes=[len(f) for f in frames])
    blob = json.dumps(head, separators=(",", ":")).encode("utf-8")
    with atomic_open(path, "wb") as fh:
        fh.write(MAGIC)
        fh.write(struct.pack("<I", len(blob)))
        fh.write(blob)
        for frame in frames:
            fh.write(frame)


def read_part(path: str | os.PathLike, *, frames: bool = True) -> Part | None:
    """A part, or None when it is absent or not whole (then the item is converted again)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                return None
            (length,) = struct.unpack("<I", fh.read(4))
            head = json.loads(fh.read(length).decode("utf-8"))
            sizes = head.get("sizes", [])
            if not frames:
                return Part(head["status"], head)
            data = fh.read()
    except (OSError, ValueError, KeyError, struct.error):
        return None
    if len(data) != sum(sizes):
        return None
    out: list[bytes] = []
    offset = 0
    for size in sizes:
        out.append(data[offset : offset + size])
        offset += size
    return Part(head["status"], head, out)


class PartsCache:
    """The parts folder of one output, valid for one settings ``key``."""

    def __init__(self, directory: str | os.PathLike, key: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.key = json.loads(json.dumps(key))  # normalised as it will read back

    def open(self) -> None:
        """Create the folder, or empty it when it was made with other settings."""
        key_path = self.directory / KEY_FILE
        if self.directory.exists():
            try:
                stored = json.loads(key_path.read_text())
            except (OSError, ValueError):
                stored = None
            if stored != self.key:
                log.warning("%s was made with other settings; starting over", self.directory)
                shutil.rmtree(self.directory)
        if not self.directory.exists():
            self.directory.mkdir(parents=True)
            write_text_atomic(key_path, json.dumps(self.key, indent=1, sort_keys=True))

    def path(self, source: str) -> Path:
        return self.directory / part_name(source)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
