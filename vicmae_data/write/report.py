"""``OUT.report.json``: what a conversion did, and whether an output is already complete."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vicmae_data.atomic import write_text_atomic
from vicmae_data.write.parts import key_changes

# Settings that change how a conversion runs, not what it writes: a complete output made
# with other values of these is still complete.
RUN_ONLY = ("workers", "item_timeout")


@dataclass
class ConvertReport:
    """What a conversion did; also written as ``FILE.beton.report.json``.

    ``up_to_date`` is True when the output was already complete with these settings and
    nothing was done (the report is the one on disk).
    """

    out: str
    written: int
    skipped: list[dict[str, Any]] = field(default_factory=list)
    partial: list[dict[str, Any]] = field(default_factory=list)
    capped: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)  # label -> class, as stored in the file
    holdout: dict[str, Any] = field(default_factory=dict)  # {"out", "written", ...} if any
    up_to_date: bool = False

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("up_to_date")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConvertReport:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class OutputExistsError(RuntimeError):
    """The output exists and was not made with these settings (or its report is gone)."""


def report_path_for(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".report.json")


def read_report(out: str | os.PathLike) -> ConvertReport | None:
    """The report next to ``out``, or None when it is missing or unreadable."""
    try:
        return ConvertReport.from_json(json.loads(report_path_for(out).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def completed(out: Path, settings: dict[str, Any]) -> ConvertReport:
    """The report of the complete output ``out`` when it was made with ``settings``;
    :class:`OutputExistsError` naming what differs otherwise."""
    report = read_report(out)
    if report is None:
        raise OutputExistsError(
            f"{out} exists and has no readable {report_path_for(out).name} to tell how it "
            "was made: pass --overwrite to replace it, or choose another --out"
        )
    old = {k: v for k, v in report.settings.items() if k not in RUN_ONLY}
    new = {k: v for k, v in settings.items() if k not in RUN_ONLY}
    if old != new:
        changes = "; ".join(key_changes(old, new))
        raise OutputExistsError(
            f"{out} is complete but was made with other settings ({changes}): pass "
            "--overwrite to convert it again with these, or choose another --out"
        )
    report.up_to_date = True
    return report


def write_report(
    report: ConvertReport,
    *,
    seconds: float,
    frames: int,
    nbytes: int,
    resumed: int,
    listed: int,
) -> Path:
    """Fill ``report.totals`` and write the report next to its output, atomically."""
    out = Path(report.out)
    report.totals = {
        "items": listed,
        "written": report.written,
        "skipped": len(report.skipped),
        "partial": len(report.partial),
        "capped": len(report.capped),
        "missing": len(report.missing),
        "resumed": resumed,
        "frames": frames,
        "bytes": nbytes,
        "bytes_per_frame": round(nbytes / frames, 1) if frames else 0.0,
        "file_bytes": out.stat().st_size if out.is_file() and report.written else 0,
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = report_path_for(out)
    write_text_atomic(path, json.dumps(report.to_json(), indent=1))
    return path


def add_item(report: ConvertReport, path: str, source: str, header: dict[str, Any]) -> bool:
    """Enter one item's outcome in ``report``; True when it is written to the file."""
    if header["status"] != "ok":
        report.skipped.append({"path": path, "source": source, "reason": header.get("reason", "?")})
        return False
    meta = header["meta"]
    if meta.get("partial"):
        report.partial.append(
            {
                "path": path,
                "source": source,
                "reason": meta.get("partial_reason", ""),
                "num_frames": meta["num_frames"],
            }
        )
    if meta.get("capped"):
        report.capped.append(
            {
                "path": path,
                "source": source,
                "reason": meta["capped"],
                "num_frames": meta["num_frames"],
            }
        )
    report.written += 1
    return True
