"""One job per output: ``OUT.lock`` is held (``flock``) for the whole of a conversion.

Two conversions to the same ``--out`` (say, the same Slurm array task started twice, or a
rerun while the first is still going) would share one resume cache and overwrite each
other's file: the second is refused at once, with the first one's pid, host and command.

The lock is the kernel's (``fcntl.flock`` on the open lock file), so it goes with the
process however it ends: a killed job leaves at most a stale ``OUT.lock`` that the next job
takes over. On a network file system ``flock`` works across hosts where the file system
supports locks (NFSv4, Lustre with ``flock`` mounted).

Holding the lock also proves that no live job is writing ``OUT``: the temporary files a
killed job left for ``OUT`` and its report (``.OUT.PID.HEX.tmp``, as large as what it had
written: hundreds of GB for a killed Kinetics write) are removed as soon as it is taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from vicmae_data.atomic import temporaries

log = logging.getLogger(__name__)


class OutputLockedError(RuntimeError):
    """Another job is writing the same output (the message names it)."""


def lock_path_for(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".lock")


@contextlib.contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of output ``out`` until the block ends; :class:`OutputLockedError` if
    another process holds it. Once held, a killed job's temporary files of ``out`` go."""
    path = lock_path_for(out)
    fd = _acquire(path, Path(out))
    try:
        remove_leftovers(Path(out))
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding the lock: see _acquire
        os.close(fd)


def remove_leftovers(out: Path) -> list[Path]:
    """Remove the temporary files of ``out`` and of ``OUT.report.json`` (call it only while
    holding ``out``'s lock: then their writer is dead); returns what was removed."""
    removed = []
    for name in (out.name, out.name + ".report.json"):
        for tmp in temporaries(out.parent, name):
            with contextlib.suppress(OSError):
                size = tmp.stat().st_size
                tmp.unlink()
                removed.append(tmp)
                log.warning("removed %s (%d bytes) left by a job that was killed", tmp, size)
    return removed


def _acquire(path: Path, out: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise OutputLockedError(
                f"{out} is being written by another job ({holder}); wait for it to end or "
                f"stop it (its lock: {path})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The holder unlinks the file before it lets go: if the name now points elsewhere
        # (or nowhere), this lock is on a file nobody else will look at; take the new one.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _describe(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "pid unknown: it is just starting"
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    if holder.get("started"):
        text += f", started {holder['started']}"
    if holder.get("command"):
        text += f": {holder['command']}"
    return text
