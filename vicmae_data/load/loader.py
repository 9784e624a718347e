"""``make_loader``: batches of sampled, decoded, cropped views from one or several .beton files.

One ffcv ``Loader`` per file, each running :class:`~vicmae_data.load.decoder.
WebPFramesDecoder` in compiled code on ``num_workers`` threads. Several files are mixed by
weight inside every batch (``["k400.beton", ("in1k.beton", 0.3)]``: file ``i`` gives
``round(B * w_i / sum(w))`` samples of each batch; a bare path has weight 1). The first
file defines the epoch; the others cycle.

Example::

    loader = make_loader("k400.beton", 256, num_workers=8, distributed=True)
    for epoch in range(loader.epoch, epochs):
        for batch in loader:                      # one epoch per iteration
            x = to_model_input(batch, "cuda")     # (B, 2, 3, 224, 224) float, normalised

With one file and ``device="cpu"``, a batch's tensors are views of ffcv's rotating buffers:
they stay valid while the next ``batches_ahead`` batches are prepared; copy what you keep.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.loader.epoch_iterator import EpochIterator
from ffcv.pipeline import PipelineSpec
from ffcv.transforms import ToTensor

from vicmae_data.ffcv_private import FileLoader, OrderFactory
from vicmae_data.format.beton import BetonError, BetonFile, custom_fields
from vicmae_data.load.batch import Batch
from vicmae_data.load.crops import draw_view_params
from vicmae_data.load.decoder import SampleIndexDecoder, WebPFrameCountDecoder, WebPFramesDecoder
from vicmae_data.load.memory import MEMORY_MODES, BoundedMmapManager, ReadOnlyMmapManager
from vicmae_data.load.order import BlockShuffleOrder, default_rank_world

log = logging.getLogger(__name__)

PathSpec = str | os.PathLike | tuple[str | os.PathLike, float]

_MANAGERS = {
    "mmap-bounded": BoundedMmapManager,
    "os_cache": ReadOnlyMmapManager,
    "process_cache": None,  # ffcv's own
}


def _parse_paths(paths: PathSpec | Sequence[PathSpec]) -> list[tuple[str, float]]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out = []
    for p in paths:
        path, weight = (p[0], float(p[1])) if isinstance(p, tuple) else (p, 1.0)
        if not os.path.isfile(path):
            raise BetonError(f"{path}: no such file")
        if weight <= 0:
            raise ValueError(f"{path}: weight must be > 0, not {weight}")
        out.append((os.fspath(path), weight))
    if not out:
        raise ValueError("make_loader needs at least one .beton path")
    return out


def split_batch(batch_size: int, weights: Sequence[float]) -> list[int]:
    """Samples per file in a batch: ``round(B * w_i / sum(w))``, summing to ``B``, each >= 1."""
    total = float(sum(weights))
    sizes = [max(1, round(batch_size * w / total)) for w in weights]
    sizes[0] += batch_size - sum(sizes)  # rounding slack goes to the epoch-defining file
    if sizes[0] < 1:
        raise ValueError(f"batch_size {batch_size} is too small for {len(weights)} files")
    return sizes


class VicmaeLoader:
    """Iterate for one epoch of :class:`Batch`; ``len()`` is batches per epoch."""

    def __init__(
        self,
        loaders: list[FileLoader],
        decoders: list[WebPFramesDecoder],
        device: torch.device,
        epoch: int = 0,
        image_flags: list[torch.Tensor] | None = None,
    ) -> None:
        self.loaders = loaders
        self.decoders = decoders
        # Per file, bool per sample: a still image (a one-frame video is a video).
        self.image_flags = image_flags
        self.device = device
        self.epoch = epoch
        self.batch_size = sum(ld.batch_size for ld in loaders)

    def __len__(self) -> int:
        return len(self.loaders[0])

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter()`` runs (for resuming)."""
        self.epoch = int(epoch)

    @property
    def decode_failures(self) -> int:
        """Frames libwebp failed to decode so far (their views are black)."""
        return sum(d.failures for d in self.decoders)

    def _epoch_of(self, i: int, epoch: int, cycle: int) -> int:
        # File 0 runs `epoch`; others cycle, each pass a distinct key derived from `epoch`.
        return epoch if i == 0 else epoch * 65536 + cycle

    def _start(self, i: int, epoch: int, cycle: int) -> EpochIterator:
        key = self._epoch_of(i, epoch, cycle)
        self.loaders[i].set_next_epoch(key)
        self.decoders[i].set_epoch(key)
        return iter(self.loaders[i])

    def _as_batch(self, raw: tuple[torch.Tensor, ...], file: int) -> Batch:
        # (b, V, H, W, 3) u8, (b, 1) i64, (b, 1) i32, (b, 1) i64
        frames, labels, counts, indices = raw
        files = torch.full_like(indices[:, 0], file)
        if self.image_flags is None:
            is_image = counts[:, 0] == 1
        else:
            is_image = self.image_flags[file][indices[:, 0]]
        return Batch(frames.permute(0, 1, 4, 2, 3), labels[:, 0], is_image, indices[:, 0], files)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch += 1
        failures_before = self.decode_failures
        iters = [self._start(i, epoch, 0) for i in range(len(self.loaders))]
        cycles = [0] * len(self.loaders)
        non_blocking = self.device.type == "cuda"
        try:
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
                if len(parts) == 1:
                    batch = parts[0]
                else:
                    batch = Batch(*(torch.cat(t) for t in zip(*parts, strict=True)))
                if self.device.type != "cpu":
                    batch = Batch(*(t.to(self.device, non_blocking=non_blocking) for t in batch))
                yield batch
        finally:
            for it in iters:
                it.close()
            failed = self.decode_failures - failures_before
            if failed:
                # A corrupt frame must not pass silently: its view is black in the batch.
                log.warning(
                    "epoch %d: %d frame(s) failed to decode and were left black; "
                    "`vicmae-data verify FILE.beton` names the bad samples",
                    epoch,
                    failed,
                )


def make_loader(
    paths: PathSpec | Sequence[PathSpec],
    batch_size: int,
    *,
    num_workers: int,
    sampling: str = "distant",
    delta: int = 8,
    num_views: int = 2,
    resolution: int = 224,
    distributed: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    drop_last: bool = True,
    train: bool = True,
    video_scale: tuple[float, float] = (0.5, 1.0),
    image_scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    memory: str = "mmap-bounded",
    batches_ahead: int = 3,
    epoch: int = 0,
) -> VicmaeLoader:
    """Build the loader over one .beton or a weighted mix of several.

    ``distributed=True`` gives each rank a disjoint share (``rank``/``world_size`` default
    to ``torch.distributed``'s); without it the whole file is one share.

    ``memory`` chooses how samples are read (:mod:`vicmae_data.load.memory`):
    ``"mmap-bounded"`` (default; use it unless measured otherwise) memory-maps the file and
    reads only the bytes the decoder touches (frame table and sampled frames), dropping
    this process's mapped pages before every batch, so resident memory is bounded by the
    batch size, not the file size, while the page cache (shared by the node's ranks) keeps
    what fits; ``"os_cache"`` is ffcv's plain memory map, as fast, but every touched page
    stays in the process's RSS; ``"process_cache"`` is ffcv's reader of whole 8 MiB+ pages
    per sample touched (only for storage where small random reads are very slow).
    ``train=False``: centre frame(s), centre crop, no flip, for evaluation. Sampling is
    ``"distant"``, ``"continuous"`` (frame separation up to ``delta``) or ``"center"``.

    Example: ``make_loader(["k400.beton", ("in1k.beton", 0.3)], 256, num_workers=8)``.
    """
    specs = _parse_paths(paths)
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}, not {memory!r}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, not {num_workers}")
    if distributed:
        auto_rank, auto_world = default_rank_world()
        rank = auto_rank if rank is None else rank
        world_size = auto_world if world_size is None else world_size
    else:
        rank, world_size = 0, 1
    sizes = split_batch(batch_size, [w for _, w in specs])
    loaders, decoders, image_flags = [], [], []
    for i, ((path, _), size) in enumerate(zip(specs, sizes, strict=True)):
        file_seed = seed + 1_000_003 * i
        flags = BetonFile(path).image_flags()  # a one-frame video stays a video
        image_flags.append(torch.from_numpy(flags))
        decoder = WebPFramesDecoder(
            num_views=num_views,
            resolution=resolution,
            sampling=sampling,
            delta=delta,
            seed=file_seed,
            train=train,
            video_scale=video_scale,
            image_scale=image_scale,
            ratio=ratio,
            image_flags=flags,
        )
        pipelines = {
            "frames": [decoder, ToTensor()],
            "label": [IntDecoder(), ToTensor()],
            "meta": None,
            "num_frames": PipelineSpec("frames", WebPFrameCountDecoder(), [ToTensor()]),
            "index": PipelineSpec("label", SampleIndexDecoder(), [ToTensor()]),
        }

        def block_shuffle(ffcv_loader, file_seed=file_seed):
            return BlockShuffleOrder(ffcv_loader, rank=rank, world_size=world_size, seed=file_seed)

        try:
            loader = FileLoader(
                path,
                batch_size=size,
                num_workers=num_workers,
                memory_manager=_MANAGERS[memory],
                order=OrderFactory(block_shuffle),
                seed=file_seed,
                pipelines=pipelines,
                custom_fields=custom_fields(),
                drop_last=drop_last,
                batches_ahead=batches_ahead,
            )
        except (AssertionError, ValueError, IndexError) as exc:
            raise BetonError(f"{path}: cannot load ({exc})") from None
        if len(loader) == 0:
            raise ValueError(f"{path}: fewer samples per rank than the batch share {size}")
        loaders.append(loader)
        decoders.append(decoder)
    return VicmaeLoader(
        loaders, decoders, torch.device(device), epoch=epoch, image_flags=image_flags
    )


def sample_params(
    decoder: WebPFramesDecoder,
    sample_id: int,
    num_frames: int,
    height: int,
    width: int,
    epoch: int,
    image: bool | None = None,
) -> np.ndarray:
    """The (frame, top, left, height, width, flip) rows the decoder draws for one sample
    (``image``: whether it is a still image; default: a one-frame sample is)."""
    params = np.zeros((decoder.num_views, 6), dtype=np.int32)
    one_frame_video = num_frames == 1 and image is False
    settings = decoder.video_settings if one_frame_video else decoder.settings
    draw_view_params(
        decoder.seed,
        epoch,
        sample_id,
        num_frames,
        height,
        width,
        decoder.mode,
        decoder.delta,
        decoder.train,
        settings,
        params,
        np.zeros(1, np.uint64),
    )
    return params
