"""An OSError as the few words a user acts on: "disk full", "read-only file system", ...

Stdlib only: the writer, the conversion and its workers use it for one-line messages.
"""

from __future__ import annotations

import errno

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
    """``"disk full"``, ``"read-only file system"``, ... or the system's own words."""
    if isinstance(exc, OSError):
        cause = _CAUSES.get(exc.errno or 0)
        if cause is not None:
            return cause
        if exc.strerror:
            return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
