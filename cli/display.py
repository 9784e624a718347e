"""Text every command prints: safe for any file name, and times as H:MM:SS."""

from __future__ import annotations

from rich.markup import escape


def shown(text: str) -> str:
    """``text`` safe to print: file names that are not UTF-8 (held as surrogates) become
    ``\\udcxx`` escapes instead of a UnicodeEncodeError, and rich markup is escaped."""
    return escape(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def clock(seconds: float) -> str:
    """``H:MM:SS``."""
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def size(nbytes: float) -> str:
    """``18.2 MiB``: bytes in the largest binary unit that keeps the figure >= 1."""
    value, unit = float(nbytes), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
