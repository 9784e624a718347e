"""The last step of a conversion: the resume cache's parts -> one .beton, in listing order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vicmae_data.format.manifest import Manifest, image_runs
from vicmae_data.write.parts import read_part
from vicmae_data.write.worker import Job


class PartMissingError(RuntimeError):
    """A part vanished or was damaged between the conversion and the assembly."""


class CachedSamples:
    """The converted items as an indexable sequence of Samples, read from their parts.

    The writer indexes it; each read loads one part from disk. Labels and class names come
    from this run's listing, not from the parts: the encoded frames do not depend on them,
    and annotations edited between a run and its resumption must win.
    """

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.paths = [job.part_path for job in jobs]
        self.labels = [job.label for job in jobs]
        self.class_names = [job.class_name for job in jobs]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from vicmae_data.format.beton import Sample
        from vicmae_data.format.frame_blob import FrameList

        part = read_part(self.paths[index])
        if part is None or not part.ok:
            raise PartMissingError(f"resume cache part {self.paths[index]} vanished or is damaged")
        head = part.header
        frames = FrameList(list(part.frames), int(head["height"]), int(head["width"]))
        meta = dict(head["meta"], class_name=self.class_names[index])
        return Sample(frames, self.labels[index], meta)


def file_manifest(
    dataset: str,
    split: str,
    classes: Sequence[str],
    titles: Sequence[str],
    headers: Sequence[dict[str, Any]],
    labelled: bool = True,
) -> Manifest:
    """The class list and contents stored in the file (:mod:`vicmae_data.format.manifest`);
    ``labelled=False`` marks a split that ships without labels (every label -1)."""
    kinds = [h["meta"].get("kind") == "image" for h in headers]
    source: dict[str, Any] = {"dataset": dataset, "split": split, "start": 0, "stop": len(headers)}
    source.update(label_offset=0, num_classes=len(classes))
    if not labelled:
        source["labelled"] = False
    return Manifest(
        classes=tuple(classes),
        titles=tuple(titles),
        images=image_runs(kinds),
        sources=(source,),
    )


def assemble(
    out: Path,
    jobs: Sequence[Job],
    headers: Sequence[dict[str, Any]],
    manifest: Manifest,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write the parts of ``jobs`` (whose part headers are ``headers``) to ``out``;
    :class:`~vicmae_data.write.beton_writer.BetonWriteError` when it cannot be written."""
    from vicmae_data.write.beton_writer import write_beton

    # Every blob's size from the headers alone (offset table plus frames): the writer
    # places them all before reading a frame.
    sizes = [4 * (int(h["num_frames"]) + 1) + int(h["nbytes"]) for h in headers]
    write_beton(out, CachedSamples(jobs), frame_sizes=sizes, progress=progress, manifest=manifest)
