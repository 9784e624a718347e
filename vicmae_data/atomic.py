"""Atomic file writes: a file appears under its final name whole, or not at all.

Every file vicmae writes (a .beton, a conversion part, a report, a preview, a checkpoint)
goes through :func:`atomic_path`: the content is written to a hidden temporary name in the
same folder (same file system, so the rename is atomic), flushed to disk with ``fsync``,
renamed over the final name, and the folder is ``fsync``-ed so the rename itself survives a
power cut. A crash or an exception at any point leaves the old file (or no file) under the
final name and removes the temporary one.

    with atomic_open("report.json", "w") as fh:
        json.dump(report, fh)

    with atomic_path("clip.mp4") as tmp:      # for writers that want a path (PyAV, Pillow)
        write_video(tmp, frames)

Stdlib only: conversion worker processes import it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temporary_name(path: str | os.PathLike) -> Path:
    """A hidden, unique sibling of ``path`` (unique across processes and threads):
    ``.NAME.PID.HEX.tmp``, which :func:`temporaries` recognises."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """The temporary files (:func:`temporary_name`) in ``folder``, of ``name`` only if given.

    A process killed while writing (``kill -9``, a node lost) leaves its temporary file
    behind, as large as what it had written. Only the caller knows whether the writer is
    dead (an output lock it now holds, say); this only finds them, sorted.
    """
    found = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        parts = entry.name.rsplit(".", 3)  # ".NAME", PID, HEX, "tmp"
        if len(parts) != 4 or parts[3] != "tmp" or not parts[0].startswith("."):
            continue
        stem, pid, token = parts[0][1:], parts[1], parts[2]
        if not (pid.isdigit() and len(token) == 8 and _is_hex(token) and stem):
            continue
        if (name is None or stem == name) and entry.is_file(follow_symlinks=False):
            found.append(Path(entry.path))
    return sorted(found)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's) content and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path; on a clean exit it replaces ``path`` atomically.

    ``durable=False`` skips the two ``fsync`` calls (for scratch files where a power cut
    may lose the file but must not leave half of it, e.g. test media).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent if str(path.parent) else ".")
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "wb", *, durable: bool = True, **kwargs: Any
) -> Iterator[IO[Any]]:
    """``open(path, mode)`` that writes to a temporary name and renames on a clean exit."""
    if not mode.startswith(("w", "x")):
        raise ValueError(f"atomic_open writes a new file; mode {mode!r} is not a write mode")
    with atomic_path(path, durable=durable) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see the module docstring)."""
    return write_bytes_atomic(path, text.encode(encoding))
