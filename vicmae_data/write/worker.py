"""What a conversion worker process does with one item: transcode it, store its part.

The frames go straight from the worker to its part file (no trip through a pipe to the
parent); the parent gets back a few numbers for the progress bar and the report. Kept
light to import (no ffcv, no torch): every worker process imports it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from vicmae_data.oserror import os_cause
from vicmae_data.write.parts import write_part
from vicmae_data.write.transcode import SkipError, TranscodeSettings, transcode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One item to convert, as sent to a worker (small and picklable)."""

    index: int
    path: str
    source: str
    label: int
    class_name: str
    dataset: str
    num_classes: int
    part_path: str
    settings: TranscodeSettings
    image_dataset: bool = False  # every item is a still image (ImageNet, Places365)


def item_meta(job: Job, result: Any) -> dict[str, Any]:
    """The ``meta`` dict a sample carries (see :mod:`vicmae_data.format.beton`)."""
    meta: dict[str, Any] = {
        "source": job.source,
        "class_name": job.class_name,
        "dataset": job.dataset,
        "num_classes": job.num_classes,
        # An image dataset's items are images; elsewhere a one-frame video stays a video.
        "kind": "image" if job.image_dataset else result.kind,
        "fps": round(result.fps, 6),
        "num_frames": result.num_frames,
        "height": result.height,
        "width": result.width,
        "partial": result.partial is not None,
        "source_fps": round(result.source_fps, 6),
        "source_height": result.source_height,
        "source_width": result.source_width,
        "source_bytes": _file_size(job.path),  # for `info`'s .beton / source ratio
    }
    if result.partial:
        meta["partial_reason"] = result.partial
    if result.capped:
        meta["capped"] = result.capped
    return meta


def _file_size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def run_job(job: Job) -> dict[str, Any]:
    """Convert one item and write its part; returns the part's header (no frames)."""
    try:
        result = transcode(job.path, job.settings)
    except SkipError as skip:
        header = {"source": job.source, "reason": skip.reason}
        write_part(job.part_path, "skip", header)
        return dict(header, status="skip")
    except Exception as exc:  # a bug or an exotic decoder error must not end the run
        reason = f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        log.error("%s: unexpected %s (skipped; please report it)", job.path, reason)
        log.debug("traceback", exc_info=True)
        header = {"source": job.source, "reason": reason}
        write_part(job.part_path, "skip", header)
        return dict(header, status="skip")
    header = {
        "source": job.source,
        "label": job.label,
        "height": result.height,
        "width": result.width,
        "num_frames": result.num_frames,
        "nbytes": result.nbytes,
        "meta": item_meta(job, result),
    }
    write_part(job.part_path, "ok", header, result.frames)
    return dict(header, status="ok", sizes=[])


def serve(conn: Connection, tasks: int) -> None:
    """A worker process's life: convert the jobs the parent sends, one at a time, until it
    sends None, its pipe closes, or ``tasks`` jobs are done (then a fresh worker follows).

    An OSError here comes from writing the resume cache (reading the item is transcode's
    business and becomes a skip): it is sent to the parent, which stops the job.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # What a worker would warn about (a capped video, a skipped file) goes to the report,
    # and the parent logs it; a worker writing to the terminal would tear its progress bar.
    logging.getLogger().setLevel(logging.ERROR)
    _die_with_parent()
    for _ in range(tasks):
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            header = run_job(job)
        except OSError as exc:
            filename = exc.filename if isinstance(exc.filename, str) else None
            conn.send(("oserror", os_cause(exc), filename))
            return
        conn.send(("done", header))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the fork server) dies: the fork
    server ends with the conversion, so a killed conversion leaves no worker behind, even
    one stuck in a decoder."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")
