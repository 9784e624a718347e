"""One epoch of batches from one ffcv loader per file, mixed, labelled and on the device.

:class:`VicmaeLoader` is what :func:`~vicmae_data.load.loader.make_loader` returns. Every
file's ffcv pipeline runs on its own thread, ``batches_ahead`` batches in advance; each
batch takes its share from every file (:mod:`vicmae_data.load.mixing`: by weight, the first
file defining the epoch and the others cycling; or concatenated, every file once per epoch
with a schedule of per-batch shares), offsets the labels of each file (see
:mod:`vicmae_data.format.labels`), and goes to the device. For a CUDA device the batch is
assembled in pinned (page-locked) host memory, reused across batches, and copied with
``non_blocking=True``: the copy overlaps whatever the GPU is doing, and the next batch is
decoded meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from ffcv.loader.epoch_iterator import EpochIterator

from vicmae_data.ffcv_private import FileLoader
from vicmae_data.load.batch import Batch
from vicmae_data.load.decoder import WebPFramesDecoder

log = logging.getLogger(__name__)


def concat(parts: Sequence[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.cat(parts, out=out)`` of CPU tensors, copied by NumPy on this thread.

    torch copies a batch of views (megabytes) with its intra-op threads, whose OpenMP
    workers then spin for a while on the cores the decoding threads need: measured on 2
    cores, a two-file mix spent ~40% of its CPU time in libgomp (2,850 us of CPU per
    sample against 1,730 with this). The parts are contiguous: one memcpy each.
    """
    arrays = [t.numpy() for t in parts]
    if out is None:
        return torch.from_numpy(np.concatenate(arrays))
    np.concatenate(arrays, out=out.numpy())
    return out


def rows(batch: Batch, start: int, stop: int | None) -> Batch:
    """Rows ``[start, stop)`` of every field of ``batch`` (views, no copy)."""
    return Batch(*(t[start:stop] for t in batch))


class PinnedStager:
    """Copies batches to a CUDA device through a ring of reused pinned host buffers.

    A buffer is refilled only after the copy out of it has finished (a CUDA event per
    buffer), so the asynchronous copy never reads bytes that are being overwritten.
    """

    def __init__(self, device: torch.device, slots: int = 3) -> None:
        self.device = device
        self.slots: list[tuple[list[torch.Tensor], torch.cuda.Event | None]] = [
            ([], None) for _ in range(slots)
        ]
        self.next = 0

    def __call__(self, parts: Sequence[Batch]) -> Batch:
        k = self.next
        self.next = (k + 1) % len(self.slots)
        buffers, done = self.slots[k]
        if done is not None:
            done.synchronize()  # the previous copy out of this slot has finished
        fields = list(zip(*parts, strict=True))  # per field: that field of every part
        shapes = [(sum(t.shape[0] for t in ts), *ts[0].shape[1:]) for ts in fields]
        if [tuple(b.shape) for b in buffers] != shapes:
            buffers = [
                torch.empty(shape, dtype=ts[0].dtype, pin_memory=True)
                for shape, ts in zip(shapes, fields, strict=True)
            ]
        for buffer, ts in zip(buffers, fields, strict=True):
            concat(ts, out=buffer)
        out = Batch(*(b.to(self.device, non_blocking=True) for b in buffers))
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self.slots[k] = (buffers, event)
        return out


class VicmaeLoader:
    """Iterate for one epoch of :class:`Batch`; ``len()`` is batches per epoch.

    ``schedule`` (int ``(batches, files)``, :func:`~vicmae_data.load.mixing.concat_schedule`)
    concatenates the files: batch ``t`` takes ``schedule[t, i]`` samples from file ``i``,
    whose loader runs one epoch (no cycling). Without it each file gives its loader's batch
    size to every batch.
    """

    def __init__(
        self,
        loaders: list[FileLoader],
        decoders: list[WebPFramesDecoder],
        device: torch.device,
        epoch: int = 0,
        label_offsets: Sequence[int] | None = None,
        image_flags: Sequence[torch.Tensor] | None = None,
        schedule: np.ndarray | None = None,
    ) -> None:
        self.loaders = loaders
        self.decoders = decoders
        self.device = device
        self.epoch = epoch
        self.schedule = schedule
        if schedule is None:
            self.batch_size = sum(ld.batch_size for ld in loaders)
        else:
            self.batch_size = int(schedule[0].sum()) if len(schedule) else 0
        self.label_offsets = tuple(label_offsets or [0] * len(loaders))
        # Per file, bool per sample: a still image (a one-frame video is a video).
        self.image_flags = image_flags
        self.stager = PinnedStager(device) if device.type == "cuda" else None

    def __len__(self) -> int:
        return len(self.loaders[0]) if self.schedule is None else len(self.schedule)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter()`` runs (for resuming)."""
        self.epoch = int(epoch)

    @property
    def decode_failures(self) -> int:
        """Frames libwebp failed to decode so far (their views are black)."""
        return sum(d.failures for d in self.decoders)

    @property
    def crc_failures(self) -> int:
        """Samples that failed their CRC32 check so far (``check_crc=True``; views black)."""
        return sum(d.crc_failures for d in self.decoders)

    def _epoch_of(self, i: int, epoch: int, cycle: int) -> int:
        # File 0 runs `epoch`; others cycle, each pass a distinct key derived from `epoch`.
        return epoch if i == 0 else epoch * 65536 + cycle

    def _start(self, i: int, epoch: int, cycle: int) -> EpochIterator:
        key = self._epoch_of(i, epoch, cycle)
        self.loaders[i].set_next_epoch(key)
        self.decoders[i].set_epoch(key)
        return iter(self.loaders[i])

    def _as_batch(self, raw: tuple[torch.Tensor, ...], file: int) -> Batch:
        """One file's part of a batch, views still channels last (b, V, H, W, 3)."""
        # (b, V, H, W, 3) u8, (b, 1) i64, (b, 1) i32, (b, 1) i64
        frames, labels, counts, indices = raw
        files = torch.full_like(indices[:, 0], file)
        labels = labels[:, 0]
        if self.label_offsets[file]:  # -1, a split shipped without labels, stays -1
            labels = torch.where(labels >= 0, labels + self.label_offsets[file], labels)
        if self.image_flags is None:
            is_image = counts[:, 0] == 1
        else:
            is_image = self.image_flags[file][indices[:, 0]]
        return Batch(frames, labels, is_image, indices[:, 0], files)

    def _weighted(self, iters: list[EpochIterator], epoch: int) -> Iterator[list[Batch]]:
        """Each batch's parts by weight: file 0 defines the epoch, the others cycle
        (``iters`` is updated in place, so the caller closes the current iterators)."""
        cycles = [0] * len(self.loaders)
        for raw in iters[0]:
            parts = [self._as_batch(raw, 0)]
            for i in range(1, len(iters)):
                nxt = next(iters[i], None)
                if nxt is None:
                    iters[i].close()
                    cycles[i] += 1
                    iters[i] = self._start(i, epoch, cycles[i])
                    nxt = next(iters[i])
                parts.append(self._as_batch(nxt, i))
            yield parts

    def _concatenated(self, iters: list[EpochIterator]) -> Iterator[list[Batch]]:
        """Each batch's parts by the concat schedule. A file's loader yields batches of its
        largest share; the rows a batch does not take wait, copied (ffcv reuses its buffer
        a few batches on), for the next one."""
        waiting: list[Batch | None] = [None] * len(self.loaders)
        for shares in self.schedule.tolist():
            parts = []
            for i, need in enumerate(shares):
                if need and waiting[i] is not None:
                    have = len(waiting[i].labels)
                    parts.append(rows(waiting[i], 0, min(need, have)))
                    waiting[i] = rows(waiting[i], need, None) if have > need else None
                    need = max(0, need - have)
                if need:
                    raw = next(iters[i], None)
                    got = 0 if raw is None else len(raw[1])
                    if got < need:
                        raise RuntimeError(
                            f"{self.loaders[i].fname}: {got} samples left where the concat "
                            f"schedule needs {need} (a bug: please report it)"
                        )
                    part = self._as_batch(raw, i)
                    if got > need:
                        waiting[i] = Batch(*(t[need:].clone() for t in part))
                    parts.append(rows(part, 0, need))
            yield parts

    def _assemble(self, parts: list[Batch]) -> Batch:
        """One batch from its parts, on the device, views (B, V, 3, H, W)."""
        if self.stager is not None:
            batch = self.stager(parts)
        elif len(parts) == 1:
            batch = parts[0]
        else:
            batch = Batch(*(concat(t) for t in zip(*parts, strict=True)))
        if self.stager is None and self.device.type != "cpu":
            batch = Batch(*(t.to(self.device) for t in batch))
        # Parts are joined channels last (plain copies, no transposition); on the CPU the
        # views are a permuted view, on a GPU a contiguous (B, V, 3, H, W).
        views = batch.views.permute(0, 1, 4, 2, 3)
        if self.device.type != "cpu":
            views = views.contiguous()
        return batch._replace(views=views)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch += 1
        failures_before, crc_before = self.decode_failures, self.crc_failures
        for decoder in self.decoders:
            decoder.clear_failed_samples()
        iters = [self._start(i, epoch, 0) for i in range(len(self.loaders))]
        try:
            if self.schedule is None:
                for parts in self._weighted(iters, epoch):
                    yield self._assemble(parts)
            else:
                for parts in self._concatenated(iters):
                    yield self._assemble(parts)
        finally:
            for it in iters:
                it.close()
            self._report(epoch, self.decode_failures - failures_before,
                         self.crc_failures - crc_before)  # fmt: skip

    def _report(self, epoch: int, failed: int, crc: int) -> None:
        """A damaged sample must not pass silently: one warning naming what was left black."""
        if not failed and not crc:
            return
        what = []
        if failed:
            what.append(f"{failed} frame(s) failed to decode and were left black")
        if crc:
            what.append(f"{crc} sample(s) failed their CRC32 check and were left black")
        named = [
            f"{Path(ld.fname).name} samples {d.failed_samples}"
            for ld, d in zip(self.loaders, self.decoders, strict=True)
            if d.failed_samples
        ]
        log.warning(
            "epoch %d: %s (%s); `vicmae-data verify FILE.beton` names the bad samples",
            epoch,
            ", ".join(what),
            "; ".join(named),
        )
