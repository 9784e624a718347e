"""Convert a dataset on disk into one .beton of WebP frame lists: list -> workers -> cache -> file.

    report = convert("kinetics400", Path("data/kinetics400"), Path("k400.beton"), workers=8)

1. The layout reader lists the items (label, class name, stable source id) and the
   annotated items missing on disk.
2. ``--shard K/N`` keeps the items whose source id hashes to K modulo N (stable across
   machines and reruns); ``--limit`` keeps the first N of those.
3. Worker processes transcode items (:mod:`vicmae_data.write.transcode`) and write each
   result, good or skipped, to the resume cache ``FILE.beton.parts/``; items already
   there are not converted again, so a rerun after a kill resumes.
4. The .beton is assembled from the cache in listing order (atomically, by
   :func:`vicmae_data.write.beton_writer.write_beton`), ``FILE.beton.report.json`` is written, the
   cache is removed.

Splitting a dataset over a Slurm job array, then joining the shards::

    #SBATCH --array=0-15
    vicmae-data convert kinetics400 --shard ${SLURM_ARRAY_TASK_ID}/16 \\
        --workers ${SLURM_CPUS_PER_TASK} --out k400-${SLURM_ARRAY_TASK_ID}.beton
    # once all tasks are done:
    vicmae-data merge k400-*.beton --out k400.beton
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vicmae_data.atomic import write_text_atomic
from vicmae_data.write.parts import PartsCache, parts_dir_for, read_part, write_part
from vicmae_data.write.transcode import (
    DEFAULT_MAX_SAMPLE_BYTES,
    DEFAULT_METHOD,
    DEFAULT_QUALITY,
    TranscodeSettings,
)
from vicmae_data.write.worker import Job, run_job

log = logging.getLogger(__name__)

# 2: parts carry meta["kind"] (image or video).
CACHE_VERSION = 2
# A worker process is replaced after this many items, so that whatever a decoder leaks
# on odd files cannot add up over a 300k-item dataset.
TASKS_PER_WORKER = 500


class ConvertError(RuntimeError):
    """The conversion could not produce a file (e.g. nothing at all converted)."""


@dataclass(frozen=True)
class ConvertProgress:
    """Where a conversion stands; passed to the ``progress`` callback after every item."""

    phase: str  # "convert", then "write" while the .beton is assembled
    done: int  # items finished, resumed ones included ("write": samples written)
    total: int
    resumed: int  # items found in the resume cache at start
    frames: int
    nbytes: int
    skipped: int
    elapsed: float  # seconds since start


@dataclass
class ConvertReport:
    """What a conversion did; also written as ``FILE.beton.report.json``."""

    out: str
    written: int
    skipped: list[dict[str, Any]] = field(default_factory=list)
    partial: list[dict[str, Any]] = field(default_factory=list)
    capped: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)  # label -> class, as stored in the file

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def report_path_for(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".report.json")


def in_shard(source: str, shard: tuple[int, int]) -> bool:
    """Whether an item belongs to shard ``K`` of ``N``: a hash of its source id, modulo N."""
    k, n = shard
    digest = hashlib.sha1(source.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") % n == k


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


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def convert(
    dataset: str,
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "train",
    workers: int | None = None,
    short_side: int = 256,
    fps: float | None = None,
    max_frames: int | None = None,
    quality: int = DEFAULT_QUALITY,
    method: int = DEFAULT_METHOD,
    max_sample_bytes: int = DEFAULT_MAX_SAMPLE_BYTES,
    shard: tuple[int, int] = (0, 1),
    limit: int | None = None,
    progress: Callable[[ConvertProgress], None] | None = None,
) -> ConvertReport:
    """Convert ``split`` of ``dataset`` under ``root`` into the .beton ``out``.

    Raises :class:`vicmae_data.sources.layouts.LayoutError` for a missing root, an unknown dataset
    or an unreadable annotation file, :class:`ConvertError` when no item converted (the
    report is written anyway), ``ValueError`` for bad settings. Resumes from
    ``out.parts/`` when it was made with the same settings.
    """
    from vicmae_data.sources.layouts import (
        list_items,  # the listing is the first thing that can fail
    )

    settings = TranscodeSettings(short_side, fps, max_frames, quality, method, max_sample_bytes)
    parse_shard(f"{shard[0]}/{shard[1]}")  # validates
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    workers = default_workers() if workers is None else max(1, int(workers))
    out = Path(out)
    start = time.perf_counter()

    listing = list_items(dataset, Path(root), split)
    items = [item for item in listing.items if in_shard(item.source, shard)]
    if limit is not None:
        items = items[:limit]
    root_text = str(Path(root).resolve())
    key = {
        "version": CACHE_VERSION,
        "dataset": dataset,
        "root": root_text,
        "split": split,
        "settings": asdict(settings),
    }
    run_settings = dict(key, workers=workers, shard=f"{shard[0]}/{shard[1]}", limit=limit)
    missing = [m for m in listing.missing if _missing_in_shard(m, Path(root), shard)]
    report = ConvertReport(str(out), 0, missing=missing, settings=run_settings)
    report.classes = list(listing.classes)
    report.skipped += [dict(entry) for entry in listing.skipped if shard[0] == 0]
    if not items:
        _write_report(out, report, start, frames=0, nbytes=0, resumed=0, listed=0)
        raise ConvertError(
            f"no items to convert in {root} ({dataset}, split {split}"
            f"{'' if shard == (0, 1) else f', shard {shard[0]}/{shard[1]}'})"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    cache = PartsCache(parts_dir_for(out), key)
    cache.open()
    jobs = [
        Job(
            i,
            str(it.path),
            it.source,
            int(it.label),
            it.class_name,
            dataset,
            len(listing.classes),
            str(cache.path(it.source)),
            settings,
            listing.image_dataset,
        )
        for i, it in enumerate(items)
    ]
    headers: list[dict[str, Any] | None] = [None] * len(jobs)
    todo: list[Job] = []
    for job in jobs:
        part = read_part(job.part_path, frames=False)
        if part is None:
            todo.append(job)
        else:
            headers[job.index] = part.header
    resumed = len(jobs) - len(todo)
    if resumed:
        log.info("resuming: %d of %d items already converted", resumed, len(jobs))

    tally = _Tally(len(jobs), resumed, start, progress)
    for header in headers:
        if header is not None:
            tally.add(header)
    tally.emit("convert")
    for job, header in _run_jobs(todo, workers):
        headers[job.index] = header
        tally.add(header)
        tally.emit("convert")

    ok = [job for job in jobs if headers[job.index]["status"] == "ok"]  # type: ignore[index]
    for job in jobs:
        header = headers[job.index]
        assert header is not None
        if header["status"] != "ok":
            report.skipped.append(
                {"path": job.path, "source": job.source, "reason": header.get("reason", "?")}
            )
            continue
        meta = header["meta"]
        if meta.get("partial"):
            report.partial.append(
                {
                    "path": job.path,
                    "source": job.source,
                    "reason": meta.get("partial_reason", ""),
                    "num_frames": meta["num_frames"],
                }
            )
        if meta.get("capped"):
            report.capped.append(
                {
                    "path": job.path,
                    "source": job.source,
                    "reason": meta["capped"],
                    "num_frames": meta["num_frames"],
                }
            )
    report.written = len(ok)
    if not ok:
        _write_report(out, report, start, 0, 0, resumed, len(jobs))
        cache.remove()
        raise ConvertError(
            f"nothing converted: all {len(jobs)} items were skipped (reasons in "
            f"{report_path_for(out)})"
        )

    # The writer imports ffcv (and torch): only now, so the command starts at once.
    from vicmae_data.write.beton_writer import BetonWriteError

    tally.emit("write")
    manifest = _manifest(listing, [headers[job.index] for job in ok])
    try:
        _assemble(out, ok, headers, workers, tally.emit_written, manifest)
    except BetonWriteError as exc:
        raise ConvertError(
            f"{exc}; the {len(ok)} converted items stay in {cache.directory}: "
            "rerun the same command to write the file without converting again"
        ) from None
    _write_report(out, report, start, tally.frames, tally.nbytes, resumed, len(jobs))
    cache.remove()
    return report


def _missing_in_shard(entry: dict[str, Any], root: Path, shard: tuple[int, int]) -> bool:
    """Each missing item is reported by the one shard its source id hashes to."""
    source = entry.get("source") or entry.get("path")
    if source is None:
        return shard[0] == 0
    path = Path(str(source))
    if path.is_absolute() and path.is_relative_to(root):
        path = path.relative_to(root)
    return in_shard(path.as_posix(), shard)


class _Tally:
    """Running totals for the progress callback."""

    def __init__(
        self,
        total: int,
        resumed: int,
        start: float,
        progress: Callable[[ConvertProgress], None] | None,
    ) -> None:
        self.total, self.resumed, self.start, self.progress = total, resumed, start, progress
        self.done = self.frames = self.nbytes = self.skipped = 0
        self.last_write = 0.0

    def add(self, header: dict[str, Any]) -> None:
        self.done += 1
        if header["status"] == "ok":
            self.frames += int(header["num_frames"])
            self.nbytes += int(header["nbytes"])
        else:
            self.skipped += 1

    def emit_written(self, written: int, total: int) -> None:
        """Write-phase progress: ``done``/``total`` count samples written to the file."""
        now = time.perf_counter()
        if self.progress is None or (written < total and now - self.last_write < 0.5):
            return
        self.last_write = now
        self.progress(
            ConvertProgress(
                "write",
                written,
                total,
                self.resumed,
                self.frames,
                self.nbytes,
                self.skipped,
                now - self.start,
            )
        )

    def emit(self, phase: str) -> None:
        if self.progress is not None:
            self.progress(
                ConvertProgress(
                    phase,
                    self.done,
                    self.total,
                    self.resumed,
                    self.frames,
                    self.nbytes,
                    self.skipped,
                    time.perf_counter() - self.start,
                )
            )


def _run_jobs(jobs: Sequence[Job], workers: int) -> Iterator[tuple[Job, dict[str, Any]]]:
    """Yield ``(job, header)`` as jobs finish; in this process when ``workers == 1``.

    A worker that dies (a decoder crashing on a hostile file) breaks the pool: the jobs
    it may have held are then retried one at a time, each in a fresh process, and one
    that kills its process again is skipped and named, so one bad file cannot stop (or,
    on every rerun, re-stop) a conversion.
    """
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            yield job, run_job(job)
        return
    context = _worker_context()
    queue = deque(jobs)
    while queue:
        suspects = yield from _pool_pass(queue, workers, context)
        for job in suspects:
            yield job, _run_alone(job, context)


def _pool_pass(
    queue: deque[Job], workers: int, context: multiprocessing.context.BaseContext
) -> Generator[tuple[Job, dict[str, Any]], None, list[Job]]:
    """Run jobs from ``queue`` until it is empty or the pool breaks; return the suspects."""
    in_flight: dict[Future, Job] = {}
    with ProcessPoolExecutor(
        workers, mp_context=context, max_tasks_per_child=TASKS_PER_WORKER
    ) as pool:
        try:
            # A bounded window of submitted jobs: memory does not grow with the dataset.
            while queue and len(in_flight) < 2 * workers:
                job = queue.popleft()
                in_flight[pool.submit(run_job, job)] = job
            while in_flight:
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = in_flight.pop(future)
                    try:
                        header = future.result()
                    except BrokenProcessPool:
                        suspects = [job, *in_flight.values()]
                        log.warning(
                            "a worker process died; retrying %d items one at a time", len(suspects)
                        )
                        return sorted(suspects, key=lambda j: j.index)
                    yield job, header
                    if queue:
                        nxt = queue.popleft()
                        in_flight[pool.submit(run_job, nxt)] = nxt
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return []


def _run_alone(job: Job, context: multiprocessing.context.BaseContext) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        try:
            return pool.submit(run_job, job).result()
        except BrokenProcessPool:
            reason = "the worker process died decoding it (decoder crash?)"
            log.warning("%s: %s", job.path, reason)
            header = {"source": job.source, "reason": reason}
            write_part(job.part_path, "skip", header)
            return dict(header, status="skip")


def _worker_context() -> multiprocessing.context.BaseContext:
    """forkserver (spawn where there is none), not fork: the parent may hold torch or
    numba threads. The fork server imports the worker module once and forks workers
    from it, so a worker (also one replacing a retired worker) starts in milliseconds.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["vicmae_data.write.worker"])
    return context


def _manifest(listing: Any, headers: Sequence[dict[str, Any] | None]) -> Any:
    """The class list and contents stored in the file (see vicmae_data.format.manifest)."""
    from vicmae_data.format.manifest import Manifest, image_runs

    kinds = [h["meta"].get("kind") == "image" for h in headers]  # type: ignore[index]
    source = {"dataset": listing.dataset, "split": listing.split, "start": 0}
    source.update(stop=len(headers), label_offset=0, num_classes=len(listing.classes))
    return Manifest(
        classes=tuple(listing.classes),
        titles=tuple(listing.titles),
        images=image_runs(kinds),
        sources=(source,),
    )


class _CachedSamples:
    """The converted items as an indexable sequence of Samples, read from their parts.

    ffcv's writer processes index it; each read loads one part from disk. Labels and class
    names come from this run's listing, not from the parts: the encoded frames do not
    depend on them, and annotations edited between a run and its resumption must win.
    """

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.paths = [job.part_path for job in jobs]
        self.labels = [job.label for job in jobs]
        self.class_names = [job.class_name for job in jobs]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from vicmae_data.format.beton import Sample
        from vicmae_data.format.frames import FrameList

        part = read_part(self.paths[index])
        if part is None or not part.ok:
            raise ConvertError(f"resume cache part {self.paths[index]} vanished or is damaged")
        head = part.header
        frames = FrameList(list(part.frames), int(head["height"]), int(head["width"]))
        meta = dict(head["meta"], class_name=self.class_names[index])
        return Sample(frames, self.labels[index], meta)


def _assemble(
    out: Path,
    ok: Sequence[Job],
    headers: Sequence[dict[str, Any] | None],
    workers: int,
    progress: Callable[[int, int], None],
    manifest: Any,
) -> None:
    from vicmae_data.write.beton_writer import write_beton

    # Every blob's size from the headers alone (offset table plus frames): the writer
    # places them all before reading a frame.
    sizes = [
        4 * (int(h["num_frames"]) + 1) + int(h["nbytes"])  # type: ignore[index]
        for h in (headers[job.index] for job in ok)
    ]
    write_beton(out, _CachedSamples(ok), frame_sizes=sizes, progress=progress, manifest=manifest)


def _write_report(
    out: Path,
    report: ConvertReport,
    start: float,
    frames: int,
    nbytes: int,
    resumed: int,
    listed: int,
) -> None:
    seconds = time.perf_counter() - start
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
    }
    path = report_path_for(out)
    write_text_atomic(path, json.dumps(report.to_json(), indent=1))
