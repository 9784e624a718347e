"""Write samples into a .beton (atomically), with ffcv's writer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vicmae_data.atomic import atomic_path
from vicmae_data.ffcv_private import quiet_writer_progress
from vicmae_data.format.beton import Sample, beton_fields
from vicmae_data.format.frames import FrameList
from vicmae_data.format.pages import page_size_for


def write_beton(
    path: str | os.PathLike,
    samples: Sequence[Sample],
    *,
    max_sample_bytes: int | None = None,
    num_workers: int = 1,
    show_progress: bool = False,
) -> Path:
    """Write ``samples`` to ``path`` atomically (:func:`vicmae_data.atomic.atomic_path`).

    ``samples`` may be any indexable sequence (it is read by ffcv's writer processes, so
    it must be picklable and cheap to index). ``max_sample_bytes`` sizes the page; when
    omitted it is measured from the samples. ``show_progress`` lets ffcv draw its own
    progress bar.
    """
    from ffcv.writer import DatasetWriter

    path = Path(path)
    if len(samples) == 0:
        raise ValueError("nothing to write: no samples")
    if max_sample_bytes is None:
        max_sample_bytes = max(samples[i].nbytes for i in range(len(samples)))
    with atomic_path(path) as tmp:
        writer = DatasetWriter(
            str(tmp),
            beton_fields(),
            page_size=page_size_for(max_sample_bytes),
            num_workers=max(1, num_workers),
        )
        with quiet_writer_progress(show_progress):
            writer.from_indexed_dataset(_AsTuples(samples))
    return path


class _AsTuples:
    """Adapts a sequence of :class:`Sample` to the tuples ffcv's writer expects."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[FrameList, int, dict[str, Any]]:
        s = self.samples[index]
        return s.frames, int(s.label), s.meta
