"""Convert a dataset on disk into one .beton of WebP frame lists: list -> workers -> cache -> file.

    report = convert("kinetics400", Path("data/kinetics400"), Path("k400.beton"), workers=8)

0. Settings that cannot work are refused before anything is read or written; the output
   is locked for the whole job (``OUT.lock``, :mod:`vicmae_data.write.lock`): a second
   job on the same output is refused at once. An output that is already complete with
   the same settings is left alone (the report on disk is returned, nothing is encoded);
   with other settings, or without a report, it is replaced only with ``overwrite=True``.
1. The layout reader lists the items (label, class name, stable source id) and the
   annotated items missing on disk; labels index the dataset's one class list.
2. ``--holdout F`` sets aside a stratified, deterministic fraction of the items for a
   second output (:mod:`vicmae_data.write.holdout`); ``--shard K/N`` keeps the items whose
   source id hashes to K modulo N (stable across machines and reruns); ``--limit`` keeps
   the first N of those.
3. Worker processes transcode items (:mod:`vicmae_data.write.transcode`), watched by
   :mod:`vicmae_data.write.pool` (per-item time limit, dead workers), and write each
   result, good or skipped, to the resume cache ``FILE.beton.parts/``; items already
   there are not converted again, so a rerun after a kill resumes. A rerun with other
   settings is refused with the list of what differs, unless ``restart=True``.
4. Each output is assembled from the cache in listing order (atomically), with the class
   list stored inside it, ``FILE.beton.report.json`` is written, the cache is removed.

Splitting a dataset over a Slurm job array, then joining the shards::

    #SBATCH --array=0-15
    vicmae-data convert kinetics400 --shard ${SLURM_ARRAY_TASK_ID}/16 \\
        --workers ${SLURM_CPUS_PER_TASK} --out k400-${SLURM_ARRAY_TASK_ID}.beton
    # once all tasks are done:
    vicmae-data merge k400-*.beton --out k400.beton
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vicmae_data.oserror import os_cause
from vicmae_data.write.holdout import holdout_sources, source_hash
from vicmae_data.write.parts import PartsCache, parts_dir_for, read_part
from vicmae_data.write.pool import PoolError, WorkerPool
from vicmae_data.write.report import (
    ConvertReport,
    OutputExistsError,
    add_item,
    completed,
    report_path_for,
    write_report,
)
from vicmae_data.write.settings import (
    DEFAULT_ITEM_TIMEOUT,
    DEFAULT_MAX_SAMPLE_BYTES,
    DEFAULT_METHOD,
    DEFAULT_QUALITY,
    DEFAULT_SHORT_SIDE,
    TranscodeSettings,
)
from vicmae_data.write.worker import Job

log = logging.getLogger(__name__)

# 2: parts carry meta["kind"] (image or video); labels are taken from the listing.
CACHE_VERSION = 2

__all__ = [
    "ConvertError",
    "ConvertProgress",
    "ConvertReport",
    "OutputExistsError",
    "convert",
    "in_shard",
    "parse_fps",
    "parse_shard",
    "report_path_for",
]


class ConvertError(RuntimeError):
    """The conversion could not produce a file (e.g. nothing at all converted)."""


@dataclass(frozen=True)
class ConvertProgress:
    """Where a conversion stands; passed to ``progress`` after every item and at least
    every second while items are being converted."""

    phase: str  # "convert", then "write" while each .beton is assembled
    done: int  # items finished, resumed ones included ("write": samples written)
    total: int
    resumed: int  # items found in the resume cache at start
    frames: int
    nbytes: int
    skipped: int
    elapsed: float  # seconds since start
    out: str = ""  # the file being written ("write" phase)

    @property
    def projected_bytes(self) -> int | None:
        """The frame bytes of all ``total`` items, projected from the items finished so far
        (skipped ones count as skipped); None in the write phase or before any item."""
        if self.phase != "convert" or self.done - self.skipped < 1:
            return None
        return round(self.nbytes * self.total / self.done)


def in_shard(source: str, shard: tuple[int, int]) -> bool:
    """Whether an item belongs to shard ``K`` of ``N``: a hash of its source id, modulo N."""
    k, n = shard
    return source_hash(source) % n == k


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``."""
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise ValueError(f"--shard must be K/N (e.g. 0/8), got {text!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"--shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def parse_fps(text: str) -> float | None:
    """``"native"`` -> None (the video's own rate); ``"15"`` -> 15.0 (at most 15 frames/s)."""
    if text.strip().lower() == "native":
        return None
    try:
        fps = float(text)
    except ValueError:
        fps = math.nan
    if not fps > 0:
        raise ValueError(f"--fps must be 'native' or a number > 0, got {text!r}")
    return fps


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def convert(
    dataset: str,
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "train",
    workers: int | None = None,
    short_side: int = DEFAULT_SHORT_SIDE,
    fps: float | None = None,
    max_frames: int | None = None,
    quality: int = DEFAULT_QUALITY,
    method: int = DEFAULT_METHOD,
    max_sample_bytes: int = DEFAULT_MAX_SAMPLE_BYTES,
    shard: tuple[int, int] = (0, 1),
    limit: int | None = None,
    holdout: float = 0.0,
    holdout_out: str | os.PathLike | None = None,
    item_timeout: float = DEFAULT_ITEM_TIMEOUT,
    overwrite: bool = False,
    restart: bool = False,
    progress: Callable[[ConvertProgress], None] | None = None,
    variant: str | None = None,
) -> ConvertReport:
    """Convert ``split`` of ``dataset`` under ``root`` into the .beton ``out``.

    ``variant``: for a layout with several releases (Places365: ``small`` or ``large``),
    which one to read; default the one on disk. A split that ships without labels (its
    layout says which: SSv2's test) is written with label -1 and marked unlabelled in the
    file's manifest.
    With ``holdout=F`` and ``holdout_out``, a stratified fraction F of the items goes to
    ``holdout_out`` instead (its report is ``report.holdout``'s ``report`` file).
    ``item_timeout`` seconds is the most one item may take (then it is skipped).

    Raises ``ValueError`` for settings that cannot work (before any work), ``LayoutError``
    for a missing root, an unknown dataset or an unreadable annotation file,
    ``OutputLockedError`` when another job writes ``out``, ``OutputExistsError`` when ``out`` is
    complete with other settings (``overwrite=True`` replaces it), ``SettingsChangedError`` when
    ``out.parts/`` holds items made with other settings (``restart=True`` discards them),
    :class:`ConvertError` when no item converted or the job cannot go on (the message says
    why; encoded items stay for the rerun). Returns the report on disk, with
    ``up_to_date=True``, when ``out`` is already complete with these settings.
    """
    from vicmae_data.sources.layouts import list_items
    from vicmae_data.write.lock import output_lock

    settings = TranscodeSettings(short_side, fps, max_frames, quality, method, max_sample_bytes)
    out = Path(out)
    held_out = Path(holdout_out) if holdout_out is not None else None
    workers = default_workers() if workers is None else int(workers)
    _check_run(out, held_out, holdout, shard, limit, workers, item_timeout)
    start = time.perf_counter()

    with contextlib.ExitStack() as stack:
        for path in (out, held_out):
            if path is not None:
                _make_parent(path)
                stack.enter_context(_os_errors(f"cannot lock {path}"))
                stack.enter_context(output_lock(path))
        listing = list_items(dataset, Path(root), split, variant)
        key = {
            "version": CACHE_VERSION,
            "dataset": dataset,
            "root": str(Path(root).resolve()),
            "split": split,
            "settings": asdict(settings),
        }
        if listing.variant is not None:  # the release read (only layouts that have several)
            key["variant"] = listing.variant
        run_settings = dict(
            key,
            shard=f"{shard[0]}/{shard[1]}",
            limit=limit,
            holdout=holdout,
            holdout_out=str(held_out) if held_out else None,
            workers=workers,
            item_timeout=item_timeout,
        )
        # A resume cache next to an output means an unfinished run that was allowed to
        # replace it (a run is refused before it starts when it was not).
        if not overwrite and not parts_dir_for(out).exists():
            done = _completed(out, held_out, run_settings)
            if done is not None:
                log.info("%s is already complete: nothing to do", out)
                return done
        run = _Run(dataset, listing, out, held_out, run_settings, settings, start, progress)
        run.select(shard, limit, holdout)
        with _os_errors(f"cannot write the resume cache {parts_dir_for(out)}"):
            run.cache = PartsCache(parts_dir_for(out), key)
            run.cache.open(restart=restart)
        run.encode(workers, item_timeout)
        return run.finish()
    raise AssertionError("unreachable")  # pragma: no cover


def _completed(out: Path, held_out: Path | None, settings: dict[str, Any]) -> ConvertReport | None:
    """The report of ``out`` if it (and the held-out file) is complete with ``settings``;
    None if something is to be done; OutputExistsError if a file is in the way."""
    reports = [completed(out, settings)] if out.exists() else []
    if held_out is not None and held_out.exists():
        reports.append(completed(held_out, dict(settings, role="holdout")))
    if not out.exists():
        return None
    if held_out is not None and not held_out.exists():
        # A shard may hold no held-out item: then its held-out file is not written.
        return reports[0] if reports[0].holdout.get("holdout_written", 1) == 0 else None
    return reports[0]


def _check_run(
    out: Path,
    held_out: Path | None,
    holdout: float,
    shard: tuple[int, int],
    limit: int | None,
    workers: int,
    item_timeout: float,
) -> None:
    """Refuse settings that cannot work, before any work starts (ValueError, one line)."""
    parse_shard(f"{shard[0]}/{shard[1]}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if not item_timeout > 0:
        raise ValueError(f"--item-timeout must be > 0 seconds, got {item_timeout}")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"--holdout must be a fraction in [0, 1), got {holdout}")
    if (holdout > 0) != (held_out is not None):
        raise ValueError("--holdout F and --holdout-out FILE go together: give both or neither")
    for path in (out, held_out):
        if path is not None and path.is_dir():
            raise ValueError(f"{path} is a folder: --out and --holdout-out name the file to write")
    if held_out is not None and held_out.resolve() == out.resolve():
        raise ValueError(f"--holdout-out {held_out} is --out itself: give another file")


def _make_parent(path: Path) -> None:
    with _os_errors(f"cannot create the folder of {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _os_errors(what: str):
    """An OSError becomes a one-line :class:`ConvertError`: what failed, and the cause."""
    try:
        yield
    except OSError as exc:
        raise ConvertError(f"{what}: {os_cause(exc)}") from None


class _Run:
    """One conversion's state between listing and the written files."""

    def __init__(self, dataset, listing, out, held_out, run_settings, settings, start, progress):
        self.dataset, self.listing, self.out, self.held_out = dataset, listing, out, held_out
        self.run_settings, self.settings, self.start = run_settings, settings, start
        self.progress = progress
        self.cache: PartsCache | None = None
        self.jobs: list[Job] = []
        self.held: set[str] = set()
        self.headers: list[dict[str, Any] | None] = []
        self.resumed = 0
        self.resumed_jobs: set[int] = set()
        self.frames = self.nbytes = self.skipped = self.done = 0

    def select(self, shard: tuple[int, int], limit: int | None, holdout: float) -> None:
        listing = self.listing
        # Held out over the whole listing, before sharding: every shard makes the same choice.
        self.held = holdout_sources(listing.items, holdout) if holdout else set()
        if holdout and not self.held:
            smallest = min(Counter(item.label for item in listing.items).values())
            raise ConvertError(
                f"--holdout {holdout:g} holds out no item: round({holdout:g} x items of a "
                f"class) is 0 for every class (the smallest has {smallest}); hold out more"
            )
        items = [item for item in listing.items if in_shard(item.source, shard)]
        if limit is not None:
            items = items[:limit]
        self.items = items
        self.missing = [m for m in listing.missing if _missing_in_shard(m, listing.root, shard)]
        self.shard = shard
        if not items:
            report = self._report(self.out, "train")
            write_report(report, seconds=0, frames=0, nbytes=0, resumed=0, listed=0)
            where = "" if shard == (0, 1) else f", shard {shard[0]}/{shard[1]}"
            raise ConvertError(
                f"no items to convert in {listing.root} ({self.dataset}, split "
                f"{listing.split}{where})"
            )

    def _report(self, out: Path, role: str) -> ConvertReport:
        report = ConvertReport(str(out), 0, settings=dict(self.run_settings))
        if role == "holdout":
            report.settings["role"] = "holdout"
        else:
            report.missing = list(self.missing)
            if self.shard[0] == 0:  # loops and ../ paths: named once, by shard 0
                report.skipped += [dict(entry) for entry in self.listing.skipped]
        report.classes = list(self.listing.classes)
        return report

    def encode(self, workers: int, item_timeout: float) -> None:
        assert self.cache is not None
        n_classes = len(self.listing.classes)
        self.jobs = [
            Job(i, str(it.path), it.source, int(it.label), it.class_name, self.dataset,
                n_classes, str(self.cache.path(it.source)), self.settings,
                self.listing.image_dataset)
            for i, it in enumerate(self.items)
        ]  # fmt: skip
        self.headers = [None] * len(self.jobs)
        todo: list[Job] = []
        for job in self.jobs:
            part = read_part(job.part_path, frames=False)
            if part is None:
                todo.append(job)
            else:
                self.resumed_jobs.add(job.index)
                self._add(job, part.header)
        self.resumed = len(self.resumed_jobs)
        if self.resumed:
            log.info("resuming: %d of %d items already converted", self.resumed, len(self.jobs))
        self.emit("convert", self.done, len(self.jobs))
        pool = WorkerPool(min(workers, max(1, len(todo))), item_timeout=item_timeout)
        try:
            for job, header in pool.run(todo):
                if job is not None:
                    self._add(job, header)
                self.emit("convert", self.done, len(self.jobs))
        except PoolError as exc:
            raise ConvertError(
                f"{exc}; the {_items(self.done)} converted so far stay in "
                f"{self.cache.directory}: rerun the same command to resume"
            ) from None

    def _add(self, job: Job, header: dict[str, Any]) -> None:
        self.headers[job.index] = header
        self.done += 1
        if header["status"] == "ok":
            self.frames += int(header["num_frames"])
            self.nbytes += int(header["nbytes"])
            if header["meta"].get("capped") and job.index not in self.resumed_jobs:
                log.warning("%s: %s", job.path, header["meta"]["capped"])
        else:
            self.skipped += 1

    def emit(self, phase: str, done: int, total: int, out: Path | None = None) -> None:
        if self.progress is not None:
            self.progress(
                ConvertProgress(
                    phase, done, total, self.resumed, self.frames, self.nbytes,
                    self.skipped, time.perf_counter() - self.start, str(out or ""),
                )
            )  # fmt: skip

    def finish(self) -> ConvertReport:
        from vicmae_data.write.assemble import PartMissingError, assemble, file_manifest
        from vicmae_data.write.beton_writer import BetonWriteError

        assert self.cache is not None
        outputs = [(self.out, "train")]
        if self.held_out is not None:
            outputs.append((self.held_out, "holdout"))
        plans = []  # (report, its jobs, the jobs whose items converted)
        for path, role in outputs:
            report = self._report(path, role)
            mine = [j for j in self.jobs if (j.source in self.held) == (role == "holdout")]
            ok = [j for j in mine if add_item(report, j.path, j.source, self.headers[j.index])]
            plans.append((report, mine, ok))
        if self.held_out is not None:
            links = {
                "fraction": self.run_settings["holdout"],
                "train": str(self.out),
                "train_written": plans[0][0].written,
                "holdout": str(self.held_out),
                "holdout_written": plans[1][0].written,
            }
            for report, *_ in plans:
                report.holdout = dict(links)
        if not plans[0][2]:  # nothing for --out: the run failed
            for report, mine, _ in plans:
                self._write_report(report, mine)
            self.cache.remove()
            raise ConvertError(
                f"nothing converted: all {_items(len(plans[0][1]))} for {self.out} were "
                f"skipped (reasons in {report_path_for(self.out)})"
            )
        for report, mine, ok in plans[1:]:
            if not ok:  # a shard may hold no held-out item: no file, the report says so
                log.warning(
                    "%s: none of its %s converted; not written", report.out, _items(len(mine))
                )
        listing = self.listing
        for report, _, ok in plans:
            if not ok:
                continue
            path = Path(report.out)
            headers = [self.headers[j.index] for j in ok]
            manifest = file_manifest(
                self.dataset, listing.split, listing.classes, listing.titles, headers,
                labelled=listing.labelled,
            )  # fmt: skip
            self.emit("write", 0, len(ok), path)
            try:
                assemble(path, ok, headers, manifest, self._write_progress(path))
            except (OSError, PartMissingError, BetonWriteError) as exc:
                # BetonWriteError already names the file and the cause.
                what = f"{path}: {os_cause(exc)}" if isinstance(exc, OSError) else str(exc)
                raise ConvertError(
                    f"{what}; the {_items(len(self.jobs))} converted stay in "
                    f"{self.cache.directory}: rerun the same command to write the file "
                    "without converting again"
                ) from None
        for report, mine, _ in plans:
            self._write_report(report, mine)
        self.cache.remove()
        return plans[0][0]

    def _write_progress(self, path: Path) -> Callable[[int, int], None]:
        return lambda done, total: self.emit("write", done, total, path)

    def _write_report(self, report: ConvertReport, jobs: list[Job]) -> None:
        ok = [self.headers[j.index] for j in jobs]
        ok = [h for h in ok if h is not None and h["status"] == "ok"]
        write_report(
            report,
            seconds=time.perf_counter() - self.start,
            frames=sum(int(h["num_frames"]) for h in ok),
            nbytes=sum(int(h["nbytes"]) for h in ok),
            resumed=sum(j.index in self.resumed_jobs for j in jobs),
            listed=len(jobs),
        )


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def _missing_in_shard(entry: dict[str, Any], root: Path, shard: tuple[int, int]) -> bool:
    """Each missing item is reported by the one shard its source id hashes to."""
    source = entry.get("source") or entry.get("path")
    if source is None:
        return shard[0] == 0
    path = Path(str(source))
    if path.is_absolute() and path.is_relative_to(root):
        path = path.relative_to(root)
    return in_shard(path.as_posix(), shard)
