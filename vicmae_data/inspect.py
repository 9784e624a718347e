"""Look inside a vicmae .beton: summary numbers (`info`), a full decode check (`verify`),
and one sample as pixels (`read_sample`).

Everything builds on :class:`~vicmae_data.formats.BetonFile` (raw bytes, no ffcv pipeline).
Decoding here goes through Pillow's libwebp: it is for notebooks, tests and checks; the
fast compiled path is the loader's.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from vicmae_data.formats import BetonError, BetonFile

# Above this many samples, `info` reads the JSON meta of a spread-out subset (plus the first
# sample of every class) instead of all of them: on a 300k-video file the metas sit next to
# their frames, one page each, and reading them all is a random read per sample.
EXACT_META_LIMIT = 20_000
# `info` lists every class name up to this many classes; above it, the most frequent few.
LIST_CLASSES_UP_TO = 20

OFFSET_BYTES = 4  # one uint32 per entry of a sample's frame offset table


# --------------------------------------------------------------------------- decoding


def decode_frame(data: bytes) -> np.ndarray:
    """One WebP frame -> uint8 ``[H, W, 3]`` RGB. Raises ``ValueError`` when it cannot."""
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as im:
            im.load()
            rgb = im.convert("RGB") if im.mode != "RGB" else im
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ... on bad bytes
        raise ValueError(f"undecodable WebP ({type(exc).__name__}: {exc})") from None


def decode_frames(frames: Sequence[bytes]) -> np.ndarray:
    """WebP frames of one size -> uint8 ``[T, H, W, 3]``."""
    return np.stack([decode_frame(f) for f in frames])


def read_sample(path: str | os.PathLike, index: int) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Sample ``index`` of a .beton, decoded: ``(frames, label, meta)``.

    ``frames`` is uint8 ``[T, H, W, 3]`` (RGB). Raises ``IndexError`` for an index outside
    the file and :class:`BetonError` for a file that is not a vicmae .beton.

    Example::

        frames, label, meta = read_sample("k400.beton", 0)
        frames.shape  # (T, 256, 340, 3)
    """
    beton = BetonFile(path)
    n = len(beton)
    if not 0 <= index < n:
        raise IndexError(f"{beton.path}: sample {index} out of range (the file has {n} samples)")
    sample = beton.sample(index)
    try:
        frames = decode_frames(sample.frames.frames)
    except ValueError as exc:
        raise BetonError(f"{beton.path}: sample {index}: {exc}") from None
    return frames, sample.label, sample.meta


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class BetonInfo:
    """What `vicmae-data info` shows. Frame/size numbers are exact (from the metadata
    table); ``datasets`` and ``partial`` are counted over ``meta_read`` samples."""

    path: str
    file_bytes: int
    page_size: int
    samples: int
    num_classes: int
    class_names: dict[int, str]
    class_counts: dict[int, int]
    images: int
    videos: int
    frames_total: int
    frames_min: int
    frames_median: float
    frames_max: int
    height_min: int
    height_max: int
    width_min: int
    width_max: int
    common_resolution: tuple[int, int]  # (height, width), the most frequent
    frame_bytes_total: int
    bytes_per_frame: float
    datasets: dict[str, int]
    partial: int
    meta_read: int = field(default=0)

    @property
    def meta_sampled(self) -> bool:
        """True when ``datasets``/``partial`` come from a subset of the samples."""
        return self.meta_read < self.samples

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (class indices become string keys, as JSON needs)."""
        d = asdict(self)
        d["class_names"] = {str(k): v for k, v in self.class_names.items()}
        d["class_counts"] = {str(k): v for k, v in self.class_counts.items()}
        d["common_resolution"] = list(self.common_resolution)
        d["meta_sampled"] = self.meta_sampled
        return d


def _meta_indices(labels: np.ndarray, exact_limit: int) -> np.ndarray:
    """Which samples' JSON meta to read: all, or the first of each class + an even spread."""
    n = len(labels)
    if n <= exact_limit:
        return np.arange(n)
    _, first = np.unique(labels, return_index=True)
    spread = np.linspace(0, n - 1, exact_limit, dtype=np.int64)
    return np.union1d(first, spread)


def info(path: str | os.PathLike, *, exact_limit: int = EXACT_META_LIMIT) -> BetonInfo:
    """Summarise a .beton from its metadata table (and the JSON meta of some samples).

    Example::

        summary = info("k400.beton")
        summary.samples, summary.frames_median, summary.bytes_per_frame
    """
    beton = BetonFile(path)
    n = len(beton)
    rows = beton.frames_meta
    labels = np.asarray(beton.labels, dtype=np.int64)
    if n == 0:
        raise BetonError(f"{beton.path}: the file holds no samples")
    num_frames = np.asarray(rows["num_frames"], dtype=np.int64)
    heights = np.asarray(rows["height"], dtype=np.int64)
    widths = np.asarray(rows["width"], dtype=np.int64)
    # The blob of a sample is its offset table (T + 1 uint32) followed by the WebP frames.
    frame_bytes = int(np.asarray(rows["size"], dtype=np.int64).sum())
    frame_bytes -= int((OFFSET_BYTES * (num_frames + 1)).sum())
    frames_total = int(num_frames.sum())

    uniq, counts = np.unique(labels, return_counts=True)
    names: dict[int, str] = {}
    datasets: Counter[str] = Counter()
    partial = 0
    meta_idx = _meta_indices(labels, exact_limit)
    for i in meta_idx:
        meta = beton.meta(int(i))
        names.setdefault(int(labels[i]), str(meta.get("class_name", int(labels[i]))))
        datasets[str(meta.get("dataset", "?"))] += 1
        partial += bool(meta.get("partial", False))

    res = Counter(zip(heights.tolist(), widths.tolist(), strict=True)).most_common(1)[0][0]
    return BetonInfo(
        path=str(beton.path),
        file_bytes=beton.path.stat().st_size,
        page_size=beton.page_size,
        samples=n,
        num_classes=len(uniq),
        class_names=dict(sorted(names.items())),
        class_counts={int(k): int(c) for k, c in zip(uniq, counts, strict=True)},
        images=int((num_frames == 1).sum()),
        videos=int((num_frames > 1).sum()),
        frames_total=frames_total,
        frames_min=int(num_frames.min()),
        frames_median=float(np.median(num_frames)),
        frames_max=int(num_frames.max()),
        height_min=int(heights.min()),
        height_max=int(heights.max()),
        width_min=int(widths.min()),
        width_max=int(widths.max()),
        common_resolution=(int(res[0]), int(res[1])),
        frame_bytes_total=frame_bytes,
        bytes_per_frame=frame_bytes / max(frames_total, 1),
        datasets=dict(datasets.most_common()),
        partial=partial,
        meta_read=len(meta_idx),
    )


# --------------------------------------------------------------------------- verify


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
                    problem = f"decoded {shape[1]}x{shape[0]}, stored size is {w}x{h}"
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
    workers: int = 1,
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
    bad = tuple(b for _, b in results if b is not None)
    return VerifyReport(str(beton.path), n, sum(k for k, _ in results), bad)


def describe_frames(summary: BetonInfo) -> str:
    """'min/median/max' as one short string (shared by the CLI and logs)."""
    med = summary.frames_median
    med_s = str(int(med)) if med == int(med) else f"{med:.1f}"
    return f"{summary.frames_min} / {med_s} / {summary.frames_max}"


__all__ = [
    "BadSample",
    "BetonInfo",
    "VerifyReport",
    "check_sample",
    "decode_frame",
    "decode_frames",
    "info",
    "read_sample",
    "verify",
]
