"""`vicmae-data verify`: check every structure of a .beton and decode every frame.

In order: the header, field table and allocation table against the file's size (a file
cut short or with a damaged table stops here, :class:`~vicmae_data.format.beton.BetonError`);
every sample's table row against the allocation table; every frame decoded and its size
checked; every frame blob against its CRC32; every label against the class names (a label
outside the ``num_classes`` its meta states, or a class name whose samples carry another
label).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from vicmae_data.defaults import VERIFY_WORKERS
from vicmae_data.format.beton import BetonError, BetonFile
from vicmae_data.inspect.read import decode_frame
from vicmae_data.sources.items import UNLABELLED

OFFSET_BYTES = 4  # one uint32 per entry of a sample's frame offset table


@dataclass(frozen=True)
class BadSample:
    """A sample `verify` rejected, and why."""

    index: int
    source: str
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` found: every frame of every sample was decoded."""

    path: str
    samples: int
    frames: int
    bad: tuple[BadSample, ...]

    @property
    def ok(self) -> bool:
        return not self.bad


def _webp_container_problem(data: bytes) -> str | None:
    """Cheap RIFF/WEBP header check: catches truncation and length corruption."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return "not a RIFF/WEBP container"
    riff = int.from_bytes(data[4:8], "little") + 8
    if riff != len(data):
        return f"RIFF header says {riff} bytes, the frame holds {len(data)}"
    return None


def check_sample(beton: BetonFile, index: int) -> tuple[int, BadSample | None]:
    """Decode every frame of sample ``index``; ``(frames seen, problem or None)``."""
    source = "?"
    damage = beton.damaged_rows().get(index)
    if damage is not None:
        return 0, BadSample(index, source, f"damaged table row: {damage}")
    try:
        meta = beton.meta(index)
        source = str(meta.get("source", "?"))
        row = beton.frames_meta[index]
        t, h, w = int(row["num_frames"]), int(row["height"]), int(row["width"])
        frames = beton.frame_bytes(index)
    except Exception as exc:  # corrupt JSON or offset table: name it, keep going
        return 0, BadSample(index, source, f"unreadable sample ({type(exc).__name__}: {exc})")

    def bad(reason: str) -> tuple[int, BadSample]:
        return len(frames), BadSample(index, source, reason)

    stored = OFFSET_BYTES * (t + 1) + sum(len(f) for f in frames)
    if len(frames) != t or stored != int(row["size"]):
        return bad(
            f"frame table inconsistent ({len(frames)} frames, {stored} bytes "
            f"for {t} frames, {int(row['size'])} bytes)"
        )
    for key, want in (("num_frames", t), ("height", h), ("width", w)):
        if key in meta and int(meta[key]) != want:
            return bad(f"meta {key}={meta[key]} but the frame table says {want}")
    for k, data in enumerate(frames):
        problem = _webp_container_problem(data)
        if problem is None:
            try:
                shape = decode_frame(data).shape
                if shape[:2] != (h, w):
                    problem = f"decoded {shape[0]} x {shape[1]}, stored size is {h} x {w} (h x w)"
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            return bad(f"frame {k}: {problem}")
    if not beton.checksum_ok(index):
        return bad("CRC32 mismatch: the frame bytes changed after they were written")
    return len(frames), None


_WORKER_BETON: BetonFile | None = None


def _worker_open(path: str) -> None:
    global _WORKER_BETON
    _WORKER_BETON = BetonFile(path)


def _worker_check(indices: Sequence[int]) -> list[tuple[int, BadSample | None]]:
    assert _WORKER_BETON is not None
    return [check_sample(_WORKER_BETON, i) for i in indices]


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def verify(
    path: str | os.PathLike,
    *,
    workers: int = VERIFY_WORKERS,
    progress: Callable[[int], None] | None = None,
    chunk: int = 64,
) -> VerifyReport:
    """Decode every frame of every sample and check sizes and counts against the tables.

    ``progress(k)`` is called after each ``k`` samples checked. WebP has no checksum: bytes
    damaged inside a lossy frame's payload can decode to wrong pixels without an error, so
    this catches structural damage (headers, lengths, lossless streams, truncation), not
    every flipped bit.

    Example::

        report = verify("k400.beton", workers=8)
        for b in report.bad: print(b.index, b.source, b.reason)
    """
    beton = BetonFile(path)
    n = len(beton)
    results: list[tuple[int, BadSample | None]] = []
    if workers <= 1:
        for part in _chunks(n, chunk):
            results.extend(check_sample(beton, i) for i in part)
            if progress is not None:
                progress(len(part))
    else:
        with ProcessPoolExecutor(workers, initializer=_worker_open, initargs=(str(path),)) as pool:
            for part in pool.map(_worker_check, _chunks(n, chunk)):
                results.extend(part)
                if progress is not None:
                    progress(len(part))
    found = {b.index: b for _, b in results if b is not None}
    for b in label_problems(beton):
        found.setdefault(b.index, b)
    bad = tuple(found[i] for i in sorted(found))
    return VerifyReport(str(beton.path), n, sum(k for k, _ in results), bad)


def label_problems(beton: BetonFile) -> list[BadSample]:
    """Labels that disagree with the class names the samples carry.

    A label below 0, or not below the ``num_classes`` the sample's meta states (its
    ``orig_label`` after a merge offset it); or a label other than the one most samples of
    its ``class_name`` carry; on a sample of a split that ships without labels (its
    manifest says so), any label but -1. (The labels sit outside the frames' CRC32.)
    """
    labels = beton.labels
    damaged = beton.damaged_rows()
    manifest = beton.manifest
    # False where the sample's split ships without labels: there -1 is right, and only -1.
    labelled = manifest.labelled_flags(len(beton)) if manifest is not None else None
    rows = []
    by_name: dict[str, Counter] = defaultdict(Counter)
    bad: list[BadSample] = []
    for i in range(len(beton)):
        if i in damaged:
            continue
        try:
            meta = beton.meta(i)
        except BetonError:
            continue  # reported by the sample's own check
        label, name = int(labels[i]), meta.get("class_name")
        if labelled is not None and not labelled[i]:
            if label != UNLABELLED:
                reason = f"label {label} on a sample of a split that ships without labels"
                bad.append(BadSample(i, str(meta.get("source", "?")), reason))
            continue
        rows.append((i, label, meta))
        if name is not None:
            by_name[str(name)][label] += 1
    for i, label, meta in rows:
        source = str(meta.get("source", "?"))
        own = meta.get("orig_label", label)
        classes = meta.get("num_classes")
        name = meta.get("class_name")
        if label < 0 or (isinstance(classes, int) and isinstance(own, int) and own >= classes):
            bad.append(BadSample(i, source, f"label {label} is outside the {classes} classes"))
        elif name is not None:
            right, count = by_name[str(name)].most_common(1)[0]
            if label != right:
                reason = f"label {label}, but class {name!r} is label {right} in {count} samples"
                bad.append(BadSample(i, source, reason))
    return bad
