"""Write samples into a .beton that ffcv's ``Reader`` and ``Loader`` open, with no padding.

This replaces ffcv 1.0.2's ``DatasetWriter`` (deliberately: see :mod:`vicmae_data.format.
pages` for the bytes it wastes, and its progress loop polls a counter without watching its
worker processes, so a worker that dies on a full disk or a bad sample leaves it waiting
forever). The frames are already encoded: writing is copying, so one process does it, and
an error surfaces here at once as a :class:`BetonWriteError` naming the cause.

The file is ffcv's format, written with NumPy from the dtypes of
:mod:`vicmae_data.format.tables` (ffcv's header, field descriptor, metadata and
allocation-table types; ``tests/test_manifest.py`` compares them with ``ffcv.types``), each
field's row and bytes as ffcv's fields encode them (``tests/test_beton_writer.py`` holds
the writer to the bytes it wrote through ffcv's own definitions). ``import ffcv`` loads
torch, numba and OpenCV (seconds, over a minute on a busy node): a conversion never needs
them, so it never waits for them between its last encoded item and its file::

    header | field descriptors | metadata table | frame blobs, packed into pages
    | JSON metas, back to back | allocation table

1. :func:`~vicmae_data.format.pages.choose_page_size` places every frame blob before a
   single frame is read (the caller passes the blob sizes, which the resume cache and input
   files know), starting right after the metadata table;
2. samples are read in index order (a few threads ahead) and each blob is written where the
   plan put it (``os.pwrite``); the JSON metas go, in index order, after the last blob, so
   ``info`` reads them all in one sweep, none across a page boundary;
3. the allocation table and the header go last; the whole file through
   :func:`vicmae_data.atomic.atomic_path`, so it appears complete or not at all (a
   ``before_rename`` callback writes what must exist when it appears, such as a report:
   the rename is the last step).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vicmae_data.atomic import atomic_path
from vicmae_data.format.beton import Sample, encode_meta
from vicmae_data.format.frame_blob import frames_row, pack_frames, packed_size
from vicmae_data.format.manifest import Manifest, encode_manifest
from vicmae_data.format.pages import PagePlan, choose_page_size
from vicmae_data.format.tables import ALLOC, FIELD_DESC, FIELDS, FORMAT_VERSION, HEADER, METADATA
from vicmae_data.oserror import os_cause

# Reading a sample (a part file, or a sample of another .beton) is I/O: a few threads keep
# the disk busy while this one copies; more only adds memory (each holds one sample).
READ_AHEAD_THREADS = 4


class BetonWriteError(RuntimeError):
    """The .beton could not be written (disk full, read-only folder, a bad sample)."""


@dataclass(frozen=True)
class WriteStats:
    """What a write produced; ``padding`` counts bytes that hold nothing (gaps)."""

    path: Path
    samples: int
    page_size: int
    file_bytes: int
    stored_bytes: int  # frame blobs and JSON metas
    table_bytes: int  # header, field descriptors, metadata table, allocation table

    @property
    def padding(self) -> int:
        return self.file_bytes - self.stored_bytes - self.table_bytes


def write_beton(
    path: str | os.PathLike,
    samples: Sequence[Sample],
    *,
    frame_sizes: Sequence[int] | None = None,
    num_workers: int = READ_AHEAD_THREADS,
    progress: Callable[[int, int], None] | None = None,
    manifest: Manifest | None = None,
    before_rename: Callable[[], object] | None = None,
) -> Path:
    """Write ``samples`` to ``path`` atomically; see :func:`write_beton_stats`."""
    return write_beton_stats(
        path,
        samples,
        frame_sizes=frame_sizes,
        num_workers=num_workers,
        progress=progress,
        manifest=manifest,
        before_rename=before_rename,
    ).path


def write_beton_stats(
    path: str | os.PathLike,
    samples: Sequence[Sample],
    *,
    frame_sizes: Sequence[int] | None = None,
    num_workers: int = READ_AHEAD_THREADS,
    progress: Callable[[int, int], None] | None = None,
    manifest: Manifest | None = None,
    before_rename: Callable[[], object] | None = None,
) -> WriteStats:
    """Write ``samples`` (any indexable sequence of :class:`Sample`) to ``path``.

    ``frame_sizes[i]`` is the packed size of sample ``i``'s frame blob
    (:func:`~vicmae_data.format.frame_blob.packed_size`); when omitted every sample is read
    once more to measure it. ``num_workers`` threads read samples ahead of the writer.
    ``progress(done, total)`` is called as samples are written. ``manifest`` (the class
    list, :mod:`vicmae_data.format.manifest`) goes between the data and the allocation
    table, pointed at from the label field's descriptor. ``before_rename()`` is called
    once the file is complete under its temporary name, before it takes ``path``. Raises
    :class:`BetonWriteError` (one line, naming the cause) when the file cannot be written;
    nothing is then left under ``path``.
    """
    path = Path(path)
    n = len(samples)
    if n == 0:
        raise ValueError("nothing to write: no samples")
    if frame_sizes is None:
        frame_sizes = [packed_size(samples[i].frames.frames) for i in range(n)]
    if len(frame_sizes) != n:
        raise ValueError(f"{len(frame_sizes)} frame sizes for {n} samples")
    metadata = np.zeros(n, dtype=METADATA)
    descriptors = _field_descriptors()
    tables_start = HEADER.itemsize + descriptors.nbytes
    plan = choose_page_size(frame_sizes, tables_start + metadata.nbytes)
    try:
        with atomic_path(path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                allocations, end = _write_samples(
                    fd, samples, frame_sizes, metadata, plan, num_workers, progress
                )
                extra = 0
                if manifest is not None:
                    blob = encode_manifest(manifest, descriptors, end)
                    _pwrite_all(fd, blob, end)
                    extra = -(-len(blob) // ALLOC.alignment) * ALLOC.alignment
                    end += extra
                table = np.array(allocations, dtype=ALLOC)
                _pwrite_all(fd, table.tobytes(), end)
                header = np.zeros(1, dtype=HEADER)
                header["version"] = FORMAT_VERSION
                header["num_fields"] = len(FIELDS)
                header["page_size"] = plan.page_size
                header["num_samples"] = n
                header["alloc_table_ptr"] = end
                _pwrite_all(fd, header.tobytes() + descriptors.tobytes() + metadata.tobytes(), 0)
            finally:
                os.close(fd)
            if before_rename is not None:
                before_rename()
    except OSError as exc:
        raise BetonWriteError(f"{path}: cannot write ({os_cause(exc)})") from None
    stored = int(sum(int(size) for _, _, size in allocations))
    return WriteStats(
        path=path,
        samples=n,
        page_size=plan.page_size,
        file_bytes=end + table.nbytes,
        stored_bytes=stored,
        table_bytes=tables_start + metadata.nbytes + table.nbytes + extra,
    )


def _field_descriptors() -> np.ndarray:
    """ffcv's field descriptor table, filled as ``DatasetWriter.prepare`` fills it: type id
    and name; the argument bytes stay zero, as ``to_binary`` leaves them for ``IntField``,
    ``JSONField`` and the frames field (the manifest's record goes into the label's)."""
    descriptors = np.zeros(len(FIELDS), dtype=FIELD_DESC)
    for i, (name, type_id, _) in enumerate(FIELDS):
        encoded = np.frombuffer(name.encode("ascii"), dtype="<u1")[:16]
        descriptors[i]["type_id"] = type_id
        descriptors[i]["name"][: len(encoded)] = encoded
    return descriptors


class _Allocator:
    """Where each sample's bytes go: planned addresses, no page crossing (ffcv's rule)."""

    def __init__(self, plan: PagePlan, frame_sizes: Sequence[int]) -> None:
        self.plan = plan
        self.frame_sizes = frame_sizes
        self.meta_cursor = plan.end  # metas go after the last frame blob
        self.allocations: list[tuple[int, int, int]] = []  # (sample, ptr, size), ffcv's order

    def blob(self, i: int, size: int) -> int:
        """Sample ``i``'s frame blob goes where the plan put it."""
        if size != int(self.frame_sizes[i]):
            raise BetonWriteError(
                f"sample {i}: its frames take {size} bytes, {int(self.frame_sizes[i])} "
                "were announced (did the input change while it was being written?)"
            )
        return self._allocated(i, int(self.plan.addresses[i]), size)

    def meta(self, i: int, size: int) -> int:
        """Sample ``i``'s meta: next in the meta region, never across a page boundary."""
        page = self.plan.page_size
        if self.meta_cursor // page != (self.meta_cursor + size - 1) // page:
            self.meta_cursor = (self.meta_cursor // page + 1) * page
        self.meta_cursor += size
        return self._allocated(i, self.meta_cursor - size, size)

    def _allocated(self, i: int, ptr: int, size: int) -> int:
        self.allocations.append((i, ptr, size))
        return ptr


def _write_samples(
    fd: int,
    samples: Sequence[Sample],
    frame_sizes: Sequence[int],
    metadata: np.ndarray,
    plan: PagePlan,
    num_workers: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[tuple[int, int, int]], int]:
    """Encode and write every sample; returns the allocations and the end of the data.

    Each sample's fields in the on-disk order (frames, label, meta), their rows and bytes
    as ffcv's fields write them: the frame blob and its row; the label, an int64 in the
    row; the meta, JSON bytes pointed at by its row."""
    frames_col, label_col, meta_col = (metadata[name] for name in METADATA.names)
    alloc = _Allocator(plan, frame_sizes)
    n = len(samples)
    for i, sample in _read_ahead(samples, num_workers):
        blob = pack_frames(sample.frames.frames)
        ptr = alloc.blob(i, blob.size)
        frames_col[i] = frames_row(sample.frames, ptr, blob)
        label_col[i] = int(sample.label)
        meta = encode_meta(sample.meta)
        meta_ptr = alloc.meta(i, len(meta))
        meta_col[i] = (meta_ptr, len(meta))
        _pwrite_all(fd, blob, ptr)
        _pwrite_all(fd, meta, meta_ptr)
        if progress is not None:
            progress(i + 1, n)
    return alloc.allocations, alloc.meta_cursor


def _read_ahead(samples: Sequence[Sample], threads: int) -> Iterator[tuple[int, Sample]]:
    """``(i, samples[i])`` in order, read by ``threads`` threads a few samples ahead."""
    n = len(samples)

    def read(i: int) -> Sample:
        try:
            return samples[i]
        except OSError as exc:  # not the output's fault: say so before the caller's except
            raise BetonWriteError(f"sample {i}: cannot read its input ({os_cause(exc)})") from None

    if threads <= 1:
        for i in range(n):
            yield i, read(i)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="beton-read") as pool:
        pending: deque[Future] = deque()
        nxt = 0
        try:
            for i in range(n):
                while nxt < n and len(pending) < 2 * threads:
                    pending.append(pool.submit(read, nxt))
                    nxt += 1
                yield i, pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _pwrite_all(fd: int, data: bytes | np.ndarray, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
