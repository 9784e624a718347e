"""Every use of ffcv's private attributes in vicmae, in one module. Written for ffcv 1.0.2.

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
- The epoch a Loader runs next is its ``next_epoch`` attribute.

(Files are written by :mod:`vicmae_data.write.beton_writer`, from ``ffcv.types``' format
definitions and the fields' public ``encode``, not by ffcv's ``DatasetWriter``.)

A newer ffcv may rename any of these; :func:`check_ffcv_version` warns once when the
installed version is not the one this module was written for.
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

from ffcv.loader import Loader
from ffcv.loader.epoch_iterator import EpochIterator
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
        super().close()


class _LockedEpochIterator(_ClosingEpochIterator):
    """One pipeline at a time across every loader (numba's workqueue threading layer)."""

    def run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event):
        with _PIPELINE_LOCK:
            return super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)


class FileLoader(Loader):
    """ffcv's Loader with a memory manager of our choosing and pipelines serialised.

    ``memory_manager(reader)`` builds the manager; ``None`` keeps ffcv's process cache.
    ``serialise``: run this loader's pipeline under a lock shared by every FileLoader (for
    numba's workqueue threading layer, which cannot run two parallel regions at once).
    The Loader is built with the process cache (ffcv 1.0.2's ``OSCacheManager`` corrupts
    numba's shared array types, see :mod:`vicmae_data.load.memory`), then the manager is
    swapped and the pipeline graph rebuilt around its reader.
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
        super().__init__(*args, os_cache=False, **kwargs)
        if memory_manager is not None:
            self.memory_manager = memory_manager(self.reader)
            self.graph = Graph(
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
        Compiler.set_num_threads(self.num_workers)
        order = self.next_traversal_order()
        selected = order[: len(self) * self.batch_size]
        self.next_epoch += 1
        if self.code is None or self.recompile:
            self.generate_code()
        return (_LockedEpochIterator if self.serialise else _ClosingEpochIterator)(self, selected)
