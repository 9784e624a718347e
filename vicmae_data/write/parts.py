"""The resume cache of a conversion: one small file per converted (or skipped) item.

``FILE.beton.parts/`` sits next to the output. Each item's result, WebP frames and all,
is written to a temporary name and renamed, so a killed conversion leaves only whole
parts; rerunning the same command skips every item that has a part (skipped items
too, so a bad file is not re-tried). ``key.json`` holds the settings the parts were made
with: a rerun with other settings is refused with the list of what differs
(:class:`SettingsChangedError`) and empties the cache only when asked (``restart=True``).
After the .beton is assembled the folder goes. A part whose worker was killed mid-write
leaves a temporary file that :meth:`PartsCache.open` removes (it runs under the output's
lock, so no live job writes here).

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

from vicmae_data.atomic import atomic_open, temporaries, write_text_atomic

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
    digest = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()
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


class SettingsChangedError(ValueError):
    """The resume cache was made with other settings; ``changes`` lists them."""

    def __init__(self, directory: Path, changes: list[str]) -> None:
        self.directory, self.changes = directory, changes
        super().__init__(
            f"{directory} holds items converted with other settings "
            f"({'; '.join(changes)}): run with the old settings to resume, or pass "
            "--restart to discard those items and start over"
        )


def key_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"name: old -> new"`` for every setting that differs (nested keys flattened)."""
    a, b = _flatten(old), _flatten(new)
    return [
        f"{name}: {_shown(a.get(name))} -> {_shown(b.get(name))}"
        for name in sorted(a.keys() | b.keys(), key=list((b | a).keys()).index)
        if a.get(name) != b.get(name)
    ]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix))  # the leaves' names are unique: keep them short
        else:
            out[prefix + k] = v
    return out


def _shown(value: Any) -> str:
    return "(none)" if value is None else str(value)


class PartsCache:
    """The parts folder of one output, valid for one settings ``key``."""

    def __init__(self, directory: str | os.PathLike, key: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.key = json.loads(json.dumps(key))  # normalised as it will read back

    def open(self, *, restart: bool = False) -> None:
        """Create the folder, or check that its items were made with this ``key``.

        Raises :class:`SettingsChangedError` (nothing deleted) when they were not, unless
        ``restart`` is set: then the old items are deleted and the run starts over.
        """
        key_path = self.directory / KEY_FILE
        self._remove_leftovers()
        if self.directory.exists():
            try:
                stored = json.loads(key_path.read_text())
            except (OSError, ValueError):
                stored = None
            if stored is None and not any(self.directory.glob("*/*.part")):
                stored = self.key  # killed before anything was stored: nothing to lose
                write_text_atomic(key_path, json.dumps(self.key, indent=1, sort_keys=True))
            if stored != self.key:
                if not restart:
                    changes = (
                        key_changes(stored, self.key)
                        if isinstance(stored, dict)
                        else [f"{KEY_FILE} is missing or unreadable"]
                    )
                    raise SettingsChangedError(self.directory, changes)
                log.warning("%s: other settings, --restart: starting over", self.directory)
                shutil.rmtree(self.directory)
        if not self.directory.exists():
            self.directory.mkdir(parents=True)
            write_text_atomic(key_path, json.dumps(self.key, indent=1, sort_keys=True))

    def _remove_leftovers(self) -> None:
        """Temporary files of parts (and of ``key.json``) whose writer was killed."""
        folders = [self.directory]
        if self.directory.is_dir():
            folders += [p for p in self.directory.iterdir() if p.is_dir()]
        for folder in folders:
            for tmp in temporaries(folder):
                tmp.unlink(missing_ok=True)
                log.info("removed %s, left by a worker that was killed", tmp)

    def path(self, source: str) -> Path:
        return self.directory / part_name(source)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
