"""How ffcv's pipeline reads a .beton: memory managers for :func:`~vicmae_data.make_loader`.

A video sample is ~300 WebP frames (megabytes) of which the decoder reads the offset table
and two frames (tens of kilobytes). Three ways to get those bytes (``memory=`` of
``make_loader``):

``"mmap-bounded"`` (default, :class:`BoundedMmapManager`)
    Memory-maps the file read-only with ``MADV_RANDOM`` (a page fault reads that page, not
    a read-ahead window of neighbouring frames), so only the touched bytes are read. Once
    the batches decoded since the last drop hold ``drop_samples`` samples (256 by default)
    it drops the pages this process has mapped (``MADV_DONTNEED``) before the next batch:
    the process's resident memory stays bounded by about that many samples' touched pages
    (tens of megabytes), not by the file size. The kernel's page cache keeps the data
    (reclaimable, shared by every rank on the node), so a file that fits it is served from
    memory on later epochs. Dropping before every batch of 16 cost ~6% of the loader's
    speed on 2 cores (each drop unmaps every page at once and interrupts the decoding
    threads' cores to flush their TLBs); once per 256 samples costs nothing measurable.
``"os_cache"`` (:class:`ReadOnlyMmapManager`)
    ffcv's plain memory map: the same reads, but every touched page stays mapped, so the
    process's resident memory grows towards the file size (reclaimable, but counted).
``"process_cache"``
    ffcv's own page reader: whole pages (8 MiB or more) per sample touched, read by
    background threads into process memory. Only worth it where large sequential reads are
    much cheaper than small random ones (some network file systems).

Why dropping is safe: the mapping is a shared, read-only file mapping, for which
``MADV_DONTNEED`` only unmaps pages; the next access faults them back in from the page
cache with the same content. A batch still being decoded (by a stale iterator thread, or
another loader) can therefore never read wrong bytes, only fault again. Batches handed to
the user are copies: the decoder writes every view into ffcv's own output buffers.
"""

from __future__ import annotations

import mmap
import os
from typing import TYPE_CHECKING

import numba as nb
import numpy as np
from ffcv.memory_managers import OSCacheManager
from ffcv.memory_managers.base import MemoryContext

if TYPE_CHECKING:
    from ffcv.reader import Reader

MEMORY_MODES = ("mmap-bounded", "os_cache", "process_cache")
_ADVICE = {"random": mmap.MADV_RANDOM, "normal": mmap.MADV_NORMAL}


class ReadOnlyMmapManager(OSCacheManager):
    """ffcv's memory-mapped reader (``"os_cache"``) without its type bug.

    ffcv 1.0.2's ``OSCacheManager.state_type`` sets ``mutable = False`` on numba's shared
    ``uint8[::1]`` and ``uint64[::1]`` type objects, which changes their hash under every
    dispatcher already keyed by them (numba then fails with a ``KeyError``). This builds
    separate read-only types instead.
    """

    @property
    def state_type(self) -> nb.types.Tuple:
        ro_u8 = nb.types.Array(nb.uint8, 1, "C", readonly=True)
        ro_u64 = nb.types.Array(nb.uint64, 1, "C", readonly=True)
        return nb.types.Tuple([ro_u8, ro_u64, ro_u64])

    def compile_reader(self):
        """``read(address, state) -> uint8[::1]``: a view of the sample's bytes (no copy).

        A module-level function numba caches on disk (ffcv compiles its own per process).
        """
        return read_mapped


@nb.njit(nogil=True, cache=True)
def read_mapped(address, mem_state):
    """The bytes of the allocation at ``address``: ``state`` is (file, sorted ptrs, sizes).

    An address that is not an allocation gives an empty view, never memory outside the
    file (the loader checks every sample's pointers before it starts, see
    :func:`vicmae_data.format.beton.check_tables`; this is the last line).
    """
    data, ptrs, sizes = mem_state
    k = np.searchsorted(ptrs, address)
    if k >= len(ptrs) or ptrs[k] != address:
        return data[0:0]
    end = min(address + sizes[k], len(data))
    return data[address:end]


class BoundedMmapContext(MemoryContext):
    """The mapping behind :class:`BoundedMmapManager`; one per manager, reused every epoch.

    ffcv calls :meth:`start_batch` on the pipeline thread right before it decodes that
    batch, i.e. after the previous batch's decoding has returned: the pages dropped there
    are the ones the finished batches touched.
    """

    def __init__(self, manager: BoundedMmapManager) -> None:
        self.manager = manager
        self.mmap: mmap.mmap | None = None
        self.array: np.ndarray | None = None
        self.since_drop = 0  # samples decoded since the last drop
        self.drops = 0

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.array, self.manager.ptrs, self.manager.sizes)

    def __enter__(self):
        res = super().__enter__()
        if self.mmap is None:
            with open(self.manager.reader.file_name, "rb") as f:
                self.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self.mmap.madvise(_ADVICE[self.manager.advice])
            # Read-only uint8 view of the whole file: what the compiled reader slices.
            self.array = np.frombuffer(self.mmap, dtype=np.uint8)
        return res

    def start_batch(self, batch: int) -> None:
        if self.since_drop >= self.manager.drop_samples:
            self.drop()
        self.since_drop += self.manager.batch_size  # the batch about to be decoded
        return super().start_batch(batch)

    def drop(self) -> None:
        """Unmap every page of the file from this process (the page cache keeps them)."""
        if self.mmap is not None:
            self.mmap.madvise(mmap.MADV_DONTNEED)
            self.drops += 1
        self.since_drop = 0

    def __exit__(self, *args) -> None:
        # Keep the mapping open: ffcv does not join a closed iterator's thread, which may
        # still be decoding from it. Dropping pages under it is harmless (see module doc).
        self.drop()
        return super().__exit__(*args)


class BoundedMmapManager(ReadOnlyMmapManager):
    """Memory map that reads only touched bytes and keeps this process's share bounded.

    Args:
        reader: ffcv's Reader of the file.
        drop_samples: drop the mapped pages once the batches decoded since the last drop
            hold this many samples (1: before every batch). Resident memory of the mapping
            stays under about ``drop_samples`` samples' touched pages, plus one batch's.
        advice: ``"random"`` (default: no read-around, a fault reads its own page) or
            ``"normal"`` (the kernel's read-around window per fault; fewer, larger reads,
            which can help on slow cold storage at the cost of reading unused bytes).
    """

    def __init__(self, reader: Reader, drop_samples: int = 256, advice: str = "random") -> None:
        if drop_samples < 1:
            raise ValueError(f"drop_samples must be >= 1, not {drop_samples}")
        if advice not in _ADVICE:
            raise ValueError(f"advice must be one of {sorted(_ADVICE)}, not {advice!r}")
        super().__init__(reader)
        self.drop_samples = int(drop_samples)
        self.batch_size = 1  # the largest batch scheduled so far (what a drop counts)
        self.advice = advice
        self.context = BoundedMmapContext(self)

    def schedule_epoch(self, batches) -> BoundedMmapContext:
        self.batch_size = max([self.batch_size, *(len(b) for b in batches)])
        return self.context


def mapped_rss_bytes(path: str | os.PathLike) -> int:
    """Resident bytes of this process's mappings of ``path`` (Linux ``/proc/self/smaps``).

    Counts the pages of the file present in this process's page tables, i.e. what the
    file adds to the process's RSS (not the page cache, which the kernel owns).
    """
    target = os.path.realpath(path)
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                inside = len(head) == 6 and head[5].rstrip("\n") == target
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total
