"""Join .beton files (shards of one dataset, or different datasets) without re-encoding.

The WebP bytes are copied as they are (after a CRC32 check). Samples are read lazily from
the inputs while the writer runs, so memory does not grow with the inputs. A sample whose
table row is damaged (:meth:`BetonFile.damaged_rows`) or whose bytes fail their CRC32 stops
the merge, naming it, or is left out with ``skip_damaged``. An existing output is replaced
only with ``overwrite`` (as ``convert`` does). The output is locked for the job
(:mod:`vicmae_data.write.lock`: a second merge into it is refused, a killed one's temporary
file removed), and its report is written before the file takes its name.

Labels: :mod:`vicmae_data.format.labels` decides which inputs share a label space (shards
of one dataset keep their labels, different datasets are offset past each other, as
``make_loader`` does when it mixes files); an offset sample keeps its original label in
``meta["orig_label"]``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vicmae_data.atomic import write_text_atomic
from vicmae_data.defaults import MERGE_WORKERS
from vicmae_data.format.beton import BetonError, BetonFile, Sample
from vicmae_data.format.labels import RelabelMode, plan_labels
from vicmae_data.format.manifest import merged_manifest
from vicmae_data.oserror import os_cause
from vicmae_data.sources.items import UNLABELLED
from vicmae_data.write.beton_writer import BetonWriteError, write_beton
from vicmae_data.write.lock import output_lock
from vicmae_data.write.report import OutputExistsError

log = logging.getLogger(__name__)


class MergeWarning(UserWarning):
    """Labels were offset, or kept although the class lists differ."""


@dataclass(frozen=True)
class MergePlan:
    """How each input's labels map into the merged file: ``label + offsets[k]``."""

    inputs: tuple[str, ...]
    lengths: tuple[int, ...]
    offsets: tuple[int, ...]
    relabelled: bool
    max_sample_bytes: int
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(self.lengths)


def plan_merge(inputs: Sequence[str | os.PathLike], relabel: RelabelMode = "auto") -> MergePlan:
    """Decide the label offset of every input (:func:`vicmae_data.format.labels.plan_labels`)."""
    if not inputs:
        raise ValueError("nothing to merge: no inputs")
    labels = plan_labels(inputs, relabel)
    notes = [n.replace("relabel 'keep'", "--relabel keep") for n in labels.notes]
    if labels.relabelled:
        notes[-1] += "; the original label is kept in meta['orig_label']"
    summaries = labels.summaries
    return MergePlan(
        inputs=tuple(s.path for s in summaries),
        lengths=tuple(s.length for s in summaries),
        offsets=labels.offsets,
        relabelled=labels.relabelled,
        max_sample_bytes=max(s.max_sample_bytes for s in summaries),
        notes=tuple(notes),
    )


class MergedSamples(Sequence[Sample]):
    """The inputs' samples end to end, relabelled by ``plan``, read on ``__getitem__``.

    Each read checks the sample's CRC32 and raises :class:`BetonError` when it fails.
    :meth:`drop_damaged` leaves out the samples that fail, after checking them all.
    """

    def __init__(self, plan: MergePlan) -> None:
        self.plan = plan
        self._open: dict[int, BetonFile] = {}
        # (input, index in it) of every sample written, in order.
        self._where = np.concatenate(
            [np.stack([np.full(n, k), np.arange(n)], axis=1) for k, n in enumerate(plan.lengths)]
        ).astype(np.int64)

    def __len__(self) -> int:
        return len(self._where)

    def _file(self, k: int) -> BetonFile:
        beton = self._open.get(k)
        if beton is None:  # threads may both open it: harmless, both are read-only
            beton = self._open[k] = BetonFile(self.plan.inputs[k])
        return beton

    def kept_rows(self) -> np.ndarray:
        """Each written sample's index among all the inputs' samples end to end."""
        starts = np.concatenate([[0], np.cumsum(self.plan.lengths)[:-1]]).astype(np.int64)
        return starts[self._where[:, 0]] + self._where[:, 1]

    def frame_sizes(self) -> list[int]:
        """The stored size of every sample's frame blob (from the inputs' tables)."""
        inputs = range(len(self.plan.inputs))
        sizes = [np.asarray(self._file(k).frames_meta["size"]) for k in inputs]
        return [int(sizes[k][i]) for k, i in self._where]

    def damaged_rows(self) -> list[dict[str, Any]]:
        """(path, index, source, reason) of every sample whose table row cannot be read
        (:meth:`BetonFile.damaged_rows`: a size or pointer outside the file, ...)."""
        found = []
        for k, path in enumerate(self.plan.inputs):
            beton = self._file(k)
            for i, reason in beton.damaged_rows().items():
                found.append({"path": path, "index": i, "source": "?", "reason": reason})
        return found

    def drop_damaged(self) -> list[dict[str, Any]]:
        """Drop and return (path, index, source, reason) of the samples whose table row is
        damaged or whose bytes fail their CRC32 (every sample is checked)."""
        rows = {(e["path"], e["index"]): e for e in self.damaged_rows()}
        damaged, keep = [], []
        for row, (k, i) in enumerate(self._where):
            beton = self._file(int(k))
            entry = rows.get((self.plan.inputs[k], int(i)))
            if entry is None and beton.checksum_ok(int(i)):
                keep.append(row)
                continue
            damaged.append(
                entry
                or {
                    "path": self.plan.inputs[k],
                    "index": int(i),
                    "source": _source_of(beton, int(i)),
                    "reason": "CRC32 mismatch: the frame bytes changed after they were written",
                }
            )
        self._where = self._where[keep]
        return damaged

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} merged samples")
        k, local = (int(x) for x in self._where[index])
        beton = self._file(k)
        if not beton.checksum_ok(local):
            raise BetonError(
                f"{self.plan.inputs[k]}: sample {local} ({_source_of(beton, local)}) fails its "
                "CRC32 check; `vicmae-data verify` lists the damaged samples, "
                "`merge --skip-damaged` leaves them out"
            )
        sample = beton.sample(local)
        if not self.plan.relabelled:
            return sample
        meta = dict(sample.meta)
        meta["orig_label"] = sample.label
        meta.setdefault("dataset", Path(self.plan.inputs[k]).stem)
        if sample.label == UNLABELLED:  # a split without labels stays without them
            return Sample(sample.frames, UNLABELLED, meta)
        return Sample(sample.frames, sample.label + self.plan.offsets[k], meta)


def _source_of(beton: BetonFile, index: int) -> str:
    try:
        return str(beton.meta(index).get("source", "?"))
    except Exception:  # a damaged meta must not hide the damage being reported
        return "?"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def report_path(beton: str | os.PathLike) -> Path:
    """Where a conversion report sits beside its .beton (``FILE.beton.report.json``)."""
    beton = Path(beton)
    return beton.with_name(beton.name + ".report.json")


def merge_reports(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    written: int,
    damaged: Sequence[dict[str, Any]] = (),
) -> Path | None:
    """Join the inputs' ``.report.json`` files, if any: lists concatenated, counts summed;
    samples left out as ``damaged`` are listed under that key.

    Returns the merged report's path, or None when no input has a report and none was
    damaged.
    """
    found = [(str(p), report_path(p)) for p in inputs]
    reports: list[tuple[str, dict[str, Any]]] = []
    for src, rp in found:
        if rp.is_file():
            try:
                reports.append((src, json.loads(rp.read_text())))
            except (OSError, json.JSONDecodeError) as exc:
                warnings.warn(
                    f"{rp}: unreadable report, left out of the merge ({exc})", stacklevel=2
                )
    if not reports and not damaged:
        return None
    merged: dict[str, Any] = {}
    for _, rep in reports:
        for key, value in rep.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
    merged["written"] = written
    if damaged:
        merged["damaged"] = list(damaged)
    merged["merged_from"] = [{"path": src, "report": rp.is_file()} for src, rp in found]
    dest = report_path(out)
    write_text_atomic(dest, json.dumps(merged, indent=2))
    return dest


@dataclass(frozen=True)
class MergeResult:
    out: Path
    plan: MergePlan
    report: Path | None
    damaged: tuple[dict[str, Any], ...] = ()


def merge(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    relabel: RelabelMode = "auto",
    num_workers: int = MERGE_WORKERS,
    skip_damaged: bool = False,
    overwrite: bool = False,
) -> MergeResult:
    """Write the samples of ``inputs`` in order to ``out`` (atomically), copying WebP bytes.

    Every sample's table row is checked, and its frame bytes against the CRC32 they were
    written with, before they are copied: a merge never re-signs damaged bytes. By default
    the first damaged sample stops the merge (:class:`BetonError` naming it; nothing is
    written); ``skip_damaged=True`` checks every sample first, leaves the damaged ones out
    and lists them in the merged report (``damaged``). ``num_workers`` threads read the
    inputs. An existing ``out`` is an :class:`~vicmae_data.write.report.OutputExistsError`
    (nothing is read or written) unless ``overwrite=True``. ``out`` is locked while it is
    written (``OutputLockedError`` when another job holds it); the report is written before
    ``out`` takes its name.

    Example::

        merge(["k400.0.beton", "k400.1.beton"], "k400.beton")           # shards: labels kept
        merge(["imagenet.beton", "k400.beton"], "mixed.beton")          # offset, with a warning
    """
    out = Path(out)
    for p in inputs:
        if _same_file(Path(p), out):
            raise ValueError(f"refusing to overwrite input {p} with the merged output")
    with output_lock(out):
        if not overwrite and (out.exists() or out.is_symlink()):
            raise OutputExistsError(
                f"{out} exists: pass --overwrite to replace it, or choose another --out"
            )
        return _merge(inputs, out, relabel, num_workers, skip_damaged)


def _merge(
    inputs: Sequence[str | os.PathLike],
    out: Path,
    relabel: RelabelMode,
    num_workers: int,
    skip_damaged: bool,
) -> MergeResult:
    plan = plan_merge(inputs, relabel)
    for note in plan.notes:
        warnings.warn(note, MergeWarning, stacklevel=3)
    samples = MergedSamples(plan)
    damaged: list[dict[str, Any]] = []
    rows = samples.damaged_rows()
    if rows and not skip_damaged:  # before any size from such a row is used
        first = rows[0]
        raise BetonError(
            f"{first['path']}: sample {first['index']} is damaged ({first['reason']}); "
            f"{len(rows)} such sample(s): `vicmae-data verify` lists the damaged samples, "
            "`merge --skip-damaged` leaves them out"
        )
    if skip_damaged:
        damaged = samples.drop_damaged()
        for entry in damaged:
            log.warning("skipped %s sample %d: %s", entry["path"], entry["index"], entry["reason"])
        if len(samples) == 0:
            raise BetonError("nothing to merge: every sample fails its CRC32 check")
    manifest = merged_manifest(
        [BetonFile(p).manifest for p in plan.inputs], plan.lengths, plan.offsets
    )
    if manifest is not None and damaged:
        manifest = manifest.select(samples.kept_rows())
    reports: list[Path | None] = []

    def report() -> None:
        try:
            reports.append(merge_reports(plan.inputs, out, len(samples), damaged))
        except OSError as exc:  # OUT is not renamed then: never there without its report
            raise BetonWriteError(
                f"{report_path(out)}: cannot write the merge's report ({os_cause(exc)})"
            ) from None

    # The report first, then OUT takes its name: a merge killed between the two leaves no
    # OUT without its report.
    write_beton(
        out,
        samples,
        frame_sizes=samples.frame_sizes(),
        num_workers=num_workers,
        manifest=manifest,
        before_rename=report,
    )
    log.info("merged %d samples from %d files into %s", len(samples), len(plan.inputs), out)
    return MergeResult(out=out, plan=plan, report=reports[0], damaged=tuple(damaged))
