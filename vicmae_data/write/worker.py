"""What a conversion worker process does with one item: transcode it, store its part.

The frames go straight from the worker to its part file (no trip through a pipe to the
parent); the parent gets back a few numbers for the progress bar and the report. Kept
light to import (no ffcv, no torch): every worker process imports it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

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
    image_dataset: bool = False  # every item is a still image (ImageNet)


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
    }
    if result.partial:
        meta["partial_reason"] = result.partial
    if result.capped:
        meta["capped"] = result.capped
    return meta


def run_job(job: Job) -> dict[str, Any]:
    """Convert one item and write its part; returns the part's header (no frames)."""
    try:
        result = transcode(job.path, job.settings)
    except SkipError as skip:
        header = {"source": job.source, "reason": skip.reason}
        write_part(job.part_path, "skip", header)
        return dict(header, status="skip")
    except Exception as exc:  # a bug or an exotic decoder error must not end the run
        log.exception("unexpected error converting %s", job.path)
        reason = f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
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
