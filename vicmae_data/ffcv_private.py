"""Every use of ffcv's private attributes in vicmae, and the list of every other coupling.

Written for, and reviewed against, ffcv 1.0.2 (:data:`FFCV_VERSION`).

vicmae reaches ffcv through its public extension points wherever one exists: a
:class:`~ffcv.fields.base.Field` (the WebP frame list), :class:`~ffcv.pipeline.operation.
Operation` decoders, a :class:`~ffcv.traversal_order.base.TraversalOrder`, and
:class:`~ffcv.memory_managers.base.MemoryManager` subclasses. What ffcv 1.0.2 offers no
public way to do is here, each with the reason:

- ``Loader(order=...)`` with an order of our own: 1.0.2 tests ``isinstance(order,
  TraversalOrder)`` and then *calls* the instance with the loader (upstream meant a class).
  :class:`OrderFactory` is an instance that, called, builds the real order.
- A memory manager other than ffcv's two: the Loader picks one from ``os_cache`` and bakes
  its reader into the compiled graph. :class:`FileLoader` swaps the manager and rebuilds
  the graph from the Loader's attributes (``pipeline_specs``, ``field_name_to_f_ix``).
- Buffers allocated once: ffcv 1.0.2 allocates every operation's buffers anew for each
  epoch, each one pinned (page-locked) whenever CUDA is available, in the thread that
  starts the epoch. For a batch of 256 videos that is ~700 MB pinned per epoch and file
  (decoded views and the decoder's scratch frames), which stalled every epoch start on
  GPU nodes; the views reach the GPU through vicmae's own pinned ring anyway
  (:class:`~vicmae_data.load.epochs.PinnedStager`). :class:`BuffersOnceGraph` allocates
  them once, unpinned, and every epoch reuses them.
- The epoch a Loader runs next is its ``next_epoch`` attribute.
- ffcv's ``Compiler.set_num_threads`` also sets torch's intra-op threads: a Loader built or
  iterated in the main thread would change the caller's ``torch.get_num_threads()`` to the
  loader's worker count. :class:`FileLoader` leaves the caller's setting as it was.

Everything else in the project that relies on how ffcv 1.0.2 is built, beyond the extension
points above (re-check each item when ffcv changes):

- ``vicmae_data/format/tables.py`` declares ffcv's on-disk layout with NumPy (header, field
  descriptors with 1024 argument bytes, metadata rows, allocation table at the end; format
  version 2; type ids 1 int, 5 JSON, 255 custom) so that neither inspecting nor writing
  imports ffcv; ``tests/test_manifest.py`` compares those dtypes, type ids and the fields'
  (zero) argument bytes with ``ffcv.types`` and ffcv's fields.
- ``vicmae_data/write/beton_writer.py`` writes that layout itself, instead of ffcv's
  ``DatasetWriter``, encoding each field as ffcv's would: ``IntField``'s int64 row,
  ``JSONField``'s bytes (``json.dumps`` with its defaults, then a NUL byte:
  ``encode_meta`` in ``vicmae_data/format/beton.py``) and the frames field's row
  (``frames_row`` in ``vicmae_data/format/frame_blob.py``, which ``WebPFramesField.encode``
  also uses); the allocation table lists each sample's allocations in field order.
  ``tests/test_beton_writer.py`` holds a written file to the sha256 of the bytes the writer
  wrote through ``ffcv.types`` and the fields' ``encode``; ``tests/test_writer_output.py``
  has ffcv's ``Reader`` read metadata that ends at, starts at or would cross a page.
- ``vicmae_data/format/pages.py`` and ``vicmae_data/write/settings.py`` follow the readers'
  page rules: the process cache slices each allocation out of one page (none may cross a
  page boundary), pages from ffcv's 2 MiB minimum, the size stored as uint32.
- ``vicmae_data/format/manifest.py`` keeps the class list where ffcv's readers never look:
  data bytes no allocation lists, and the ``label`` descriptor's argument bytes, which
  ``IntField`` leaves unused. ``vicmae_data/format/beton.py`` reads ``JSONField`` values
  (UTF-8 JSON, then a NUL byte) and hands ffcv's readers the one field ffcv does not ship
  (``custom_fields``: ``vicmae_data/format/frames.py``'s ``WebPFramesField``, an ffcv
  ``Field``, imported only where a file is loaded).
- ``vicmae_data/load/decoder.py``: ``Operation`` decoders that read ``self.metadata`` and
  ``self.memory_read`` (set on an operation by ffcv's pipeline), declare ``State`` and
  ``AllocationQuery`` objects, and return functions with ffcv's compiled calling convention
  ``(batch_indices, destination, metadata, storage_state)``; the memory-mapped readers are
  told apart by ``memory_read is read_mapped``.
- ``vicmae_data/load/kernels.py`` calls ffcv's C functions ``ctypes_resize`` (11 integer
  arguments) and ``ctypes_memcopy`` (source, destination, bytes) from ``ffcv.libffcv`` by
  address, with the signatures ffcv 1.0.2 declares.
- ``vicmae_data/load/native/cvresize.py`` calls ``cvResize`` (OpenCV's C API) in the
  ``libopencv_imgproc`` that ffcv's ``_libffcv`` extension links, found among the process's
  mappings after ``import ffcv.libffcv``.
- ``vicmae_data/load/memory.py``: ``ReadOnlyMmapManager`` subclasses ``OSCacheManager`` and
  overrides its ``state_type`` (1.0.2's marks numba's shared array types read-only in
  place) and ``compile_reader``; ``BoundedMmapContext`` subclasses ``MemoryContext``
  (``start_batch``, enter/exit) and reads the manager's ``reader.file_name``, ``ptrs`` and
  ``sizes``; ``schedule_epoch`` sees every epoch's batches.
- ``vicmae_data/load/order.py``: ``BlockShuffleOrder`` (a ``TraversalOrder``) reads
  ``self.indices`` and the loader's ``batch_size``; it reaches the Loader through
  :class:`OrderFactory`.
- ``vicmae_data/load/loader.py`` builds :class:`FileLoader` with ffcv's Loader arguments
  (``pipelines`` of ``PipelineSpec`` with ``IntDecoder``/``ToTensor``, ``custom_fields``,
  ``indices``, ``batches_ahead``...), turns ffcv's ``AssertionError``/``ValueError``/
  ``IndexError`` on a file it cannot load into one line, and reads the Loader's
  ``indices``, ``batch_size`` and ``fname``; ``vicmae_data/load/epochs.py`` runs one
  ``EpochIterator`` thread per file.
- ``pyproject.toml`` pins ``ffcv==1.0.2`` (with setuptools on Python 3.12 for the
  ``distutils`` it imports; its DeprecationWarnings are filtered in tests);
  ``scripts/bundle.sh`` builds its wheel from source and bundles the ``ldd`` closure of
  ``_libffcv*.so``, which ``scripts/bundle-rehearse.sh`` and ``scripts/bundle-install.sh``
  check.
- Tests that hold vicmae to ffcv itself: ``tests/test_beton_writer.py`` and
  ``tests/test_manifest.py`` (ffcv's ``Reader`` and ``Loader`` open what we write),
  ``tests/test_engine_exit.py`` (no ``EpochIterator`` thread outlives its epoch).

A newer ffcv may change any of these: :func:`check_ffcv_version` warns once at run time
when the installed version is not :data:`FFCV_VERSION`, and ``tests/test_ffcv_private.py``
fails until every item above has been re-checked and :data:`FFCV_VERSION` updated.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import queue
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ffcv.loader import Loader
from ffcv.loader.epoch_iterator import EpochIterator
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.graph import Graph
from ffcv.traversal_order.base import TraversalOrder

if TYPE_CHECKING:
    from ffcv.memory_managers.base import MemoryManager
    from ffcv.reader import Reader

FFCV_VERSION = "1.0.2"

# ffcv runs one pipeline thread per Loader; with several files two pipelines launch
# parallel regions at once, which numba's "workqueue" threading layer does not allow (tbb
# and omp do): under workqueue, and only then, the pipelines take turns.
_PIPELINE_LOCK = threading.Lock()


@functools.cache
def check_ffcv_version() -> None:
    """Warn (once) when the installed ffcv is not the version this module was written for."""
    try:
        installed = importlib.metadata.version("ffcv")
    except importlib.metadata.PackageNotFoundError:
        return
    if installed != FFCV_VERSION:
        warnings.warn(
            f"vicmae_data was written for ffcv {FFCV_VERSION}, found {installed}: "
            "vicmae_data/ffcv_private.py uses ffcv internals that may have changed",
            stacklevel=2,
        )


class OrderFactory(TraversalOrder):
    """Passed as ``Loader(order=...)``: ffcv 1.0.2 calls it with the loader to get the order.

    ``build(loader)`` returns the real :class:`TraversalOrder`. No ``super().__init__``:
    there is no loader yet when the factory is made.
    """

    def __init__(self, build: Callable[[Loader], TraversalOrder]) -> None:
        self.build = build

    def __call__(self, loader: Loader) -> TraversalOrder:
        return self.build(loader)

    def sample_order(self, epoch: int):  # never used: the Loader calls the built order
        raise NotImplementedError


def _allocate_unpinned(query: AllocationQuery, batch_size: int, slots: int):
    """ffcv's ``allocate_query`` without ``pin_memory``: ``slots`` x ``batch_size`` x shape."""
    shape = (batch_size, *query.shape)
    if isinstance(query.dtype, torch.dtype):
        return [torch.empty(shape, dtype=query.dtype, device=query.device) for _ in range(slots)]
    return np.empty((slots, *shape), dtype=query.dtype)


class BuffersOnceGraph(Graph):
    """ffcv's pipeline graph whose buffers are allocated once (unpinned) and then reused.

    ``allocate_memory`` lends the same buffers to every epoch of the same batch size and
    slot count; the epoch's iterator gives them back (:meth:`give_back`) once its thread
    has stopped. An iterator started while another still holds them (a user iterating
    one loader twice at once) gets buffers of its own, so no two threads write the same
    buffer.
    """

    _buffers: tuple[tuple[int, int], dict] | None = None
    _lent = False

    def allocate_memory(self, batch_size: int, batches_ahead: int) -> dict:
        key = (batch_size, batches_ahead)
        if self._lent:
            return self._allocate(batch_size, batches_ahead)
        if self._buffers is None or self._buffers[0] != key:
            self._buffers = (key, self._allocate(batch_size, batches_ahead))
        self._lent = True
        return self._buffers[1]

    @property
    def buffers(self) -> dict | None:
        """The buffers every epoch reuses (None before the first epoch)."""
        return None if self._buffers is None else self._buffers[1]

    def give_back(self, buffers: dict) -> None:
        """The iterator that was lent ``buffers`` no longer writes them."""
        if self._buffers is not None and buffers is self._buffers[1]:
            self._lent = False

    def _allocate(self, batch_size: int, slots: int) -> dict:
        requirements, _ = self.collect_requirements()
        buffers: dict[str, dict] = {}
        for kind, by_node in requirements.items():
            buffers[kind] = {}
            for node_id, query in by_node.items():
                if isinstance(query, AllocationQuery):
                    buffers[kind][node_id] = _allocate_unpinned(query, batch_size, slots)
                elif query is not None:  # a sequence of queries
                    buffers[kind][node_id] = tuple(
                        _allocate_unpinned(q, batch_size, slots) for q in query
                    )
                else:
                    buffers[kind][node_id] = None
        return buffers


class _ClosingEpochIterator(EpochIterator):
    """ffcv's EpochIterator whose ``close`` stops its thread and waits for it."""

    def run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event):
        if self.terminate_event.is_set():  # closed: decode nothing more
            return None
        return super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)

    def close(self) -> None:
        """Stop the pipeline thread, and wait for it, before its memory is released.

        ffcv's ``close`` only sets a flag that the thread reads once its queue is full, and
        releases the memory at once: the thread may still be decoding (into that memory),
        and a process that exits meanwhile aborts inside numba's threading layer (exit
        status 134, "terminate called without an active exception").
        """
        self.terminate_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            deadline = time.monotonic() + 60.0
            while self.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    self.output_queue.get_nowait()  # room for the thread's last put
                self.join(0.05)
        if not self.is_alive():  # only a FileLoader (its graph a BuffersOnceGraph) makes us
            self.loader.graph.give_back(self.memory_allocations)
        super().close()


class _LockedEpochIterator(_ClosingEpochIterator):
    """One pipeline at a time across every loader (numba's workqueue threading layer)."""

    def run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event):
        with _PIPELINE_LOCK:
            return super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)


class FileLoader(Loader):
    """ffcv's Loader with a memory manager of our choosing, buffers allocated once, and
    pipelines serialised where numba needs it.

    ``memory_manager(reader)`` builds the manager; ``None`` keeps ffcv's process cache.
    ``serialise``: run this loader's pipeline under a lock shared by every FileLoader (for
    numba's workqueue threading layer, which cannot run two parallel regions at once).
    The Loader is built with the process cache (ffcv 1.0.2's ``OSCacheManager`` corrupts
    numba's shared array types, see :mod:`vicmae_data.load.memory`), then the manager is
    swapped and the pipeline graph rebuilt (a :class:`BuffersOnceGraph`) around its reader.
    The caller's torch thread count is left as it was.
    """

    def __init__(
        self,
        *args: Any,
        memory_manager: Callable[[Reader], MemoryManager] | None = None,
        serialise: bool = False,
        **kwargs: Any,
    ) -> None:
        check_ffcv_version()
        self.serialise = serialise
        torch_threads = torch.get_num_threads()
        try:
            super().__init__(*args, os_cache=False, **kwargs)
        finally:
            torch.set_num_threads(torch_threads)
        if memory_manager is not None:
            self.memory_manager = memory_manager(self.reader)
        self.graph = BuffersOnceGraph(
            self.pipeline_specs,
            self.reader.handlers,
            self.field_name_to_f_ix,
            self.reader.metadata,
            self.memory_manager.compile_reader(),
        )
        self.generate_code()

    def set_next_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter()`` passes to the traversal order."""
        self.next_epoch = int(epoch)

    def __iter__(self) -> EpochIterator:
        # What ffcv's Compiler.set_num_threads records, without its torch.set_num_threads
        # (the pipeline thread sets its own numba threads when it starts).
        Compiler.num_threads = self.num_workers
        order = self.next_traversal_order()
        selected = order[: len(self) * self.batch_size]
        self.next_epoch += 1
        if self.code is None or self.recompile:
            self.generate_code()
        return (_LockedEpochIterator if self.serialise else _ClosingEpochIterator)(self, selected)
