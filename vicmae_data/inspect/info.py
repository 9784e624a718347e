"""`vicmae-data info`: what a .beton holds, from its metadata table (no decoding)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vicmae_data.format.beton import BetonError, BetonFile
from vicmae_data.sources.items import UNLABELLED

# Above this many samples, `info` reads the JSON meta of a spread-out subset (plus the first
# sample of every class) instead of all of them: on a 300k-video file the metas sit next to
# their frames, one page each, and reading them all is a random read per sample.
EXACT_META_LIMIT = 20_000
# `info` lists every class name up to this many classes; above it, the most frequent few.
LIST_CLASSES_UP_TO = 20

OFFSET_BYTES = 4  # one uint32 per entry of a sample's frame offset table


@dataclass(frozen=True)
class BetonInfo:
    """What `vicmae-data info` shows. Frame/size numbers are exact (from the metadata
    table); ``datasets`` and ``partial`` are counted over ``meta_read`` samples."""

    path: str
    file_bytes: int
    page_size: int
    samples: int
    num_classes: int  # the dataset's classes (stored class list), else the labels used
    class_names: dict[int, str]  # label -> class as the dataset names it (wnid, label, ...)
    class_counts: dict[int, int]
    images: int  # still images; a one-frame video counts as a video
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
    class_titles: dict[int, str] = field(default_factory=dict)  # readable names, if shipped
    classes_used: int = 0  # labels at least one sample has
    stored_bytes: int = 0  # frame blobs and JSON metas
    table_bytes: int = 0  # header, field descriptors, metadata, manifest, allocation table
    source_bytes: int = 0  # the source files' sizes (estimated when meta_sampled)
    source_known: int = 0  # samples whose meta holds their source's size
    damaged: int = 0  # samples whose table row is damaged (`verify` names them)
    unlabelled: int = 0  # samples of a split that ships without labels (label -1)

    @property
    def padding_bytes(self) -> int:
        """File bytes that hold nothing: gaps between pages' allocations."""
        return self.file_bytes - self.stored_bytes - self.table_bytes

    @property
    def meta_sampled(self) -> bool:
        """True when ``datasets``/``partial`` come from a subset of the samples."""
        return self.meta_read < self.samples

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (class indices become string keys, as JSON needs)."""
        d = asdict(self)
        d["class_names"] = {str(k): v for k, v in self.class_names.items()}
        d["class_titles"] = {str(k): v for k, v in self.class_titles.items()}
        d["class_counts"] = {str(k): v for k, v in self.class_counts.items()}
        d["common_resolution"] = list(self.common_resolution)
        d["meta_sampled"] = self.meta_sampled
        d["padding_bytes"] = self.padding_bytes
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
    if len(beton) == 0:
        raise BetonError(f"{beton.path}: the file holds no samples")
    damaged = beton.damaged_rows()
    good = np.setdiff1d(np.arange(len(beton)), np.fromiter(damaged, dtype=np.int64))
    if len(good) == 0:
        raise BetonError(f"{beton.path}: every sample's table row is damaged")
    n = len(good)  # the statistics below are over the readable samples
    rows = beton.frames_meta[good]
    labels = np.asarray(beton.labels, dtype=np.int64)[good]
    num_frames = np.asarray(rows["num_frames"], dtype=np.int64)
    heights = np.asarray(rows["height"], dtype=np.int64)
    widths = np.asarray(rows["width"], dtype=np.int64)
    # The blob of a sample is its offset table (T + 1 uint32) followed by the WebP frames.
    frame_bytes = int(np.asarray(rows["size"], dtype=np.int64).sum())
    frame_bytes -= int((OFFSET_BYTES * (num_frames + 1)).sum())
    frames_total = int(num_frames.sum())

    unlabelled = int((labels == UNLABELLED).sum())
    uniq, counts = np.unique(labels[labels != UNLABELLED], return_counts=True)
    names: dict[int, str] = {}
    datasets: Counter[str] = Counter()
    partial = 0
    meta_idx = _meta_indices(labels, exact_limit)
    source_bytes = source_known = 0
    for i in meta_idx:
        try:
            meta = beton.meta(int(good[i]))
        except BetonError:
            continue  # an unreadable meta: `verify` names it
        if labels[i] != UNLABELLED:
            names.setdefault(int(labels[i]), str(meta.get("class_name", int(labels[i]))))
        datasets[str(meta.get("dataset", "?"))] += 1
        partial += bool(meta.get("partial", False))
        if isinstance(meta.get("source_bytes"), int):
            source_bytes += meta["source_bytes"]
            source_known += 1
    if len(meta_idx) < n:  # a sampled estimate, scaled to every sample
        source_bytes = round(source_bytes * n / len(meta_idx))
        source_known = round(source_known * n / len(meta_idx))

    manifest = beton.manifest
    titles: dict[int, str] = {}
    if manifest is not None:
        names = {int(k): manifest.classes[k] for k in uniq if 0 <= k < manifest.num_classes}
        if manifest.titles:
            titles = {k: manifest.titles[k] for k in names if manifest.titles[k]}
        images = int(manifest.image_flags(len(beton))[good].sum())
    else:  # a file from before manifests: a one-frame sample is taken for an image
        images = int((num_frames == 1).sum())
    res = Counter(zip(heights.tolist(), widths.tolist(), strict=True)).most_common(1)[0][0]
    return BetonInfo(
        path=str(beton.path),
        file_bytes=beton.file_bytes,
        page_size=beton.page_size,
        samples=n,
        num_classes=manifest.num_classes if manifest is not None else len(uniq),
        class_names=dict(sorted(names.items())),
        class_counts={int(k): int(c) for k, c in zip(uniq, counts, strict=True)},
        images=images,
        videos=n - images,
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
        class_titles=titles,
        classes_used=len(uniq),
        stored_bytes=beton.stored_bytes,
        table_bytes=beton.table_bytes,
        source_bytes=source_bytes,
        source_known=source_known,
        damaged=len(damaged),
        unlabelled=unlabelled,
    )


def describe_frames(summary: BetonInfo) -> str:
    """'min/median/max' as one short string (shared by the CLI and logs)."""
    med = summary.frames_median
    med_s = str(int(med)) if med == int(med) else f"{med:.1f}"
    return f"{summary.frames_min} / {med_s} / {summary.frames_max}"
