"""An OSError as the few words a user acts on: "disk full", "read-only file system", ...

Stdlib only: the writer, the conversion and its workers use it for one-line messages.
"""

from __future__ import annotations

import errno
import os
import stat

_CAUSES = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a folder",
    errno.ENOTDIR: "a parent is not a folder",
    errno.EIO: "input/output error (failing disk or network file system?)",
}


def os_cause(exc: BaseException) -> str:
    """``"disk full"``, ``"read-only file system"``, ... or the system's own words.

    The OSError may be behind ``exc`` (its ``__cause__`` or ``__context__``): torch, for
    one, raises its own RuntimeError while a write fails with ENOSPC.
    """
    found = _errno_error(exc)
    if found is not None:
        return _CAUSES.get(found.errno) or found.strerror or os.strerror(found.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def _errno_error(exc: BaseException) -> OSError | None:
    """``exc`` or the first exception in the chain behind it that is an OSError with errno."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def not_a_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a file, in words; None when it is a regular file.

    ``"no such file"`` only when nothing is there: a folder, a FIFO (reading one would
    block until something writes to it), a socket or a device is named as what it is.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file (a broken symbolic link)" if os.path.islink(path) else "no such file"
    except OSError as exc:
        return os_cause(exc)
    if stat.S_ISREG(mode):
        return None
    for test, what in _KINDS:
        if test(mode):
            return f"is {what}, not a file"
    return "is not a regular file"


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
