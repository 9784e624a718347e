"""``make_loader``: batches of sampled, decoded, cropped views from one or several .beton files.

One ffcv ``Loader`` per file, each running :class:`~vicmae_data.load.decoder.
WebPFramesDecoder` in compiled code on ``num_workers`` threads. Several files are mixed
(:mod:`vicmae_data.load.mixing`) by weight inside every batch (``["k400.beton",
("in1k.beton", 0.3)]``: file ``i`` gives ``round(B * w_i / sum(w))`` samples of each batch;
a bare path has weight 1; the first file defines the epoch, the others cycle), or with
``mix="concat"`` as one concatenated dataset (one epoch = every sample of every file once).

Example::

    loader = make_loader("k400.beton", 256, num_workers=8, distributed=True)
    for epoch in range(loader.epoch, epochs):
        for batch in loader:                      # one epoch per iteration
            x = to_model_input(batch, "cuda")     # (B, 2, 3, 224, 224) float, normalised

    clips = make_loader("k400.beton", 8, num_workers=16, sampling="clip")  # 16 x 4 clips
    for batch in clips:
        batch.views                               # uint8 (B, 16, 3, 224, 224), time order

With one file and ``device="cpu"``, a batch's tensors are views of the loader's rotating
buffers (allocated once, reused every epoch): later batches overwrite them (a few batches
on, or as soon as the next epoch starts); copy what you keep.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import numba
import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.pipeline import PipelineSpec
from ffcv.transforms import ToTensor

from vicmae_data.ffcv_private import FileLoader, OrderFactory
from vicmae_data.format.beton import BetonError, BetonFile, custom_fields
from vicmae_data.format.labels import RELABEL_MODES, plan_labels
from vicmae_data.load.decoder import SampleIndexDecoder, WebPFrameCountDecoder, WebPFramesDecoder
from vicmae_data.load.epochs import VicmaeLoader
from vicmae_data.load.kernels import concurrent_parallel_regions_ok, crc32_address
from vicmae_data.load.memory import MEMORY_MODES, BoundedMmapManager, ReadOnlyMmapManager
from vicmae_data.load.mixing import MIX_MODES, concat_schedule, split_batch
from vicmae_data.load.order import BlockShuffleOrder, default_rank_world
from vicmae_data.load.rows import readable_samples
from vicmae_data.load.samplers import SAMPLERS
from vicmae_data.oserror import not_a_file

log = logging.getLogger(__name__)

PathSpec = str | os.PathLike | tuple[str | os.PathLike, float]

__all__ = ["make_loader", "split_batch"]

# Crop defaults. Frame pairs: the paper's Table 5 (crop scale [0.5, 1] for video) and the
# usual aspect range. Clips, for fine-tuning: facebookresearch/mae_st main_finetune.py,
# --jitter_scales_relative [0.08, 1.0] and --jitter_aspect_relative [0.75, 1.3333].
PAIR_VIDEO_SCALE, PAIR_RATIO = (0.5, 1.0), (3 / 4, 4 / 3)
CLIP_VIDEO_SCALE, CLIP_RATIO = (0.08, 1.0), (0.75, 1.3333)

_MANAGERS = {
    "mmap-bounded": BoundedMmapManager,
    "os_cache": ReadOnlyMmapManager,
    "process_cache": None,  # ffcv's own
}


def _parse_paths(paths: PathSpec | Sequence[PathSpec], mix: str) -> list[tuple[str, float]]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out = []
    for p in paths:
        if isinstance(p, tuple) and mix == "concat":
            raise ValueError(
                f"{p[0]}: mix='concat' takes every file whole, in proportion to its size; "
                "weights are for mix='weights'"
            )
        path, weight = (p[0], float(p[1])) if isinstance(p, tuple) else (p, 1.0)
        why = not_a_file(path)
        if why is not None:  # a folder is named as one, not as missing
            raise BetonError(f"{path}: {why}")
        if weight <= 0:
            raise ValueError(f"{path}: weight must be > 0, not {weight}")
        out.append((os.fspath(path), weight))
    if not out:
        raise ValueError("make_loader needs at least one .beton path")
    return out


def make_loader(
    paths: PathSpec | Sequence[PathSpec],
    batch_size: int,
    *,
    num_workers: int,
    sampling: str = "distant",
    delta: int = 8,
    num_views: int | None = None,
    clip_frames: int = 16,
    clip_stride: int = 4,
    resolution: int = 224,
    distributed: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    drop_last: bool = True,
    train: bool = True,
    test_view: tuple[int, int, int, int] | None = None,
    video_scale: tuple[float, float] | None = None,
    image_scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] | None = None,
    memory: str = "mmap-bounded",
    batches_ahead: int = 3,
    epoch: int = 0,
    relabel: str | Sequence[int] = "auto",
    mix: str = "weights",
    check_crc: bool = False,
    flip: bool = True,
) -> VicmaeLoader:
    """Build the loader over one .beton or a mix of several.

    ``sampling`` names a frame sampler (:data:`~vicmae_data.load.samplers.SAMPLERS`):
    ``"distant"`` (one frame from each of ``num_views`` equal segments, default 2),
    ``"continuous"`` (frames up to ``delta`` apart), ``"center"``, or ``"clip"``: a clip of
    ``clip_frames`` frames spread over ``clip_frames * clip_stride`` stored frames (16 x 4,
    ST-MAE's Kinetics fine-tuning; the rules in :func:`~vicmae_data.load.samplers.clip`),
    all with ONE random resized crop and ONE flip; ``batch.views`` is then uint8
    ``(B, T, 3, R, R)``, the clip's frames in time order in the slot of the pair sampling's
    views (a video model permutes it to ``(B, 3, T, R, R)`` itself). ``video_scale`` and
    ``ratio`` default to the paper's pair crops ((0.5, 1), (3/4, 4/3)) and, for clips, to
    ST-MAE's fine-tuning crops ((0.08, 1), (0.75, 1.3333)). ``"segment"`` is a clip too:
    one frame from each of ``clip_frames`` equal segments of the whole video (VideoMAE's
    Something-Something v2 sampling, :func:`~vicmae_data.load.samplers.segment`).
    ``flip=False`` never flips (VideoMAE on SSv2, whose labels say "left to right").

    ``train=False`` gives deterministic views: centre frame(s), centre crop, no flip; for
    clips ``test_view=(k, K, j, J)`` picks temporal view ``k`` of ``K`` evenly spaced clips
    and spatial view ``j`` of ``J``: ``J = 3`` squares of the short side at the start,
    centre and end of the long side, ``J = 1`` the centre crop (None: ``(0, 1, 0, 1)``).
    The same view for every sample: one pass per view, and a caller averages the passes'
    predictions per sample by ``batch.indices`` (section 4's K x 3 testing).

    ``distributed=True`` gives each rank a disjoint share (``rank``/``world_size`` default
    to ``torch.distributed``'s); without it the whole file is one share.

    ``memory`` chooses how samples are read (:mod:`vicmae_data.load.memory`):
    ``"mmap-bounded"`` (default; use it unless measured otherwise) memory-maps the file and
    reads only the bytes the decoder touches (frame table and sampled frames), dropping
    this process's mapped pages after every 256 samples, so resident memory is bounded by
    those samples' frames, not the file size, while the page cache (shared by the node's
    ranks) keeps what fits; ``"os_cache"`` is ffcv's plain memory map, a few percent
    faster (no page faults on pages touched before), but every touched page stays in the
    process's RSS; ``"process_cache"`` is ffcv's reader of whole 8 MiB+ pages per sample
    touched (only for storage where small random reads are very slow).

    Several files: ``mix="weights"`` (default) gives file ``i`` a fixed share of every
    batch by its weight, the first file defining the epoch; ``mix="concat"`` reads them as
    one concatenated dataset, as the ViC-MAE authors' ImageNet + Kinetics run does: one
    epoch is one pass over every file, each batch taking from each file in proportion to
    its size (:mod:`vicmae_data.load.mixing`). Labels of several files
    (:mod:`vicmae_data.format.labels`): ``relabel="auto"`` keeps the labels of files of
    one dataset (shards) and offsets different datasets past each other, exactly as
    ``vicmae-data merge`` does, so mixing files here and training on their merge give every
    sample the same label; ``"offset"`` offsets every file, ``"keep"`` never changes a
    label, and a list of ints gives each file's offset yourself. The offsets used are
    ``loader.label_offsets``.

    Damaged input: rows of the file's table that disagree with the file (frame count,
    frame size, pointer) are left out with one warning naming them, before any buffer is
    sized (:mod:`vicmae_data.load.rows`). The loader does NOT verify the CRC32 of what it
    reads unless ``check_crc=True`` (each sample's whole blob is read and checked before
    decoding; one that fails is left black, counted in ``loader.crc_failures`` and named
    in the epoch's warning); ``vicmae-data verify FILE`` checks every sample.

    ``num_workers`` above the CPU cores numba may use here is lowered to that number, with
    a warning. ``device="cuda"``: batches arrive on the GPU, copied from pinned memory
    without blocking.

    Example: ``make_loader(["k400.beton", ("in1k.beton", 0.3)], 256, num_workers=8)``.
    """
    if mix not in MIX_MODES:
        raise ValueError(f"mix must be one of {MIX_MODES}, not {mix!r}")
    specs = _parse_paths(paths, mix)
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}, not {memory!r}")
    sampler = SAMPLERS.get(sampling)
    if sampler is None:
        raise ValueError(f"sampling must be one of {sorted(SAMPLERS)}, not {sampling!r}")
    if sampler.clip:
        if num_views not in (None, clip_frames):
            raise ValueError(f"sampling='clip' gives clip_frames={clip_frames} views per clip")
        num_views = clip_frames
    num_views = 2 if num_views is None else num_views
    pairs = not sampler.clip
    video_scale = video_scale or (PAIR_VIDEO_SCALE if pairs else CLIP_VIDEO_SCALE)
    ratio = ratio or (PAIR_RATIO if pairs else CLIP_RATIO)
    if check_crc and crc32_address() == 0:
        raise OSError("check_crc=True needs zlib's shared library (libz), which was not found")
    num_workers = clamp_workers(num_workers)
    offsets = _label_offsets([p for p, _ in specs], relabel)
    if distributed:
        auto_rank, auto_world = default_rank_world()
        rank = auto_rank if rank is None else rank
        world_size = auto_world if world_size is None else world_size
    else:
        rank, world_size = 0, 1
    betons = [BetonFile(path) for path, _ in specs]  # checks the tables first
    goods = [readable_samples(beton) for beton in betons]
    schedule = None
    if mix == "concat":
        counts = [len(b) if g is None else len(g) for b, g in zip(betons, goods, strict=True)]
        per_rank = [-(-n // world_size) for n in counts]  # BlockShuffleOrder's padded share
        if drop_last and sum(per_rank) < batch_size:
            raise BatchTooLargeError(
                f"{sum(per_rank)} samples{' per rank' if world_size > 1 else ''} in all files "
                f"is fewer than batch_size={batch_size}",
                path=" + ".join(p for p, _ in specs),
                per_rank=[sum(per_rank)],
                weights=[1.0],
                fits=sum(per_rank),
            )  # one dataset: the trainer names the files together
        schedule = concat_schedule(per_rank, batch_size, drop_last)
        sizes = [max(1, int(schedule[:, i].max(initial=0))) for i in range(len(specs))]
    else:
        sizes = split_batch(batch_size, [w for _, w in specs])
    loaders, decoders, image_flags = [], [], []
    for i, ((path, _), size) in enumerate(zip(specs, sizes, strict=True)):
        file_seed = seed + 1_000_003 * i
        beton, good = betons[i], goods[i]
        flags = beton.image_flags()  # a one-frame video stays a video
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
            clip_stride=clip_stride,
            test_view=test_view,
            check_crc=check_crc,
            flip=flip,
            rows=good,
        )
        pipelines = {
            "frames": [decoder, ToTensor()],
            "label": [IntDecoder(), ToTensor()],
            "meta": None,
            "num_frames": PipelineSpec("frames", WebPFrameCountDecoder(), [ToTensor()]),
            "index": PipelineSpec("label", SampleIndexDecoder(), [ToTensor()]),
        }

        page_of = np.asarray(beton.frames_meta["ptr"], dtype=np.int64) // beton.page_size

        def block_shuffle(ffcv_loader, file_seed=file_seed, page_of=page_of):
            return BlockShuffleOrder(
                ffcv_loader, page_of=page_of, rank=rank, world_size=world_size, seed=file_seed
            )

        try:
            loader = FileLoader(
                path,
                batch_size=size,
                num_workers=num_workers,
                memory_manager=_MANAGERS[memory],
                serialise=len(specs) > 1 and not concurrent_parallel_regions_ok(),
                order=OrderFactory(block_shuffle),
                seed=file_seed,
                pipelines=pipelines,
                custom_fields=custom_fields(),
                # Concatenated, every file gives all its samples; the schedule drops the end.
                drop_last=drop_last and schedule is None,
                batches_ahead=batches_ahead,
                indices=good,
            )
        except (AssertionError, ValueError, IndexError) as exc:
            raise BetonError(f"{path}: cannot load ({exc})") from None
        loaders.append(loader)
        decoders.append(decoder)
    if schedule is None:
        _check_batch_fits(loaders, batch_size, [w for _, w in specs], world_size)
    return VicmaeLoader(
        loaders,
        decoders,
        torch.device(device),
        epoch=epoch,
        label_offsets=offsets,
        image_flags=image_flags,
        schedule=schedule,
    )


def clamp_workers(num_workers: int) -> int:
    """``num_workers``, lowered (with a warning) to the threads numba may run here."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, not {num_workers}")
    limit = int(numba.config.NUMBA_NUM_THREADS)  # the CPU cores, unless NUMBA_NUM_THREADS says
    if num_workers > limit:
        warnings.warn(
            f"num_workers={num_workers} is more than the {limit} CPU cores numba can use "
            f"on this machine; using {limit} decoding threads",
            stacklevel=3,
        )
        return limit
    return num_workers


def _label_offsets(paths: Sequence[str], relabel: str | Sequence[int]) -> tuple[int, ...]:
    if isinstance(relabel, str):
        if relabel not in RELABEL_MODES:
            raise ValueError(f"relabel must be one of {RELABEL_MODES} or offsets, not {relabel!r}")
        if len(paths) == 1:
            return (0,)
        plan = plan_labels(paths, relabel)
        for note in plan.notes:
            log.info("make_loader: %s", note)
        return plan.offsets
    offsets = tuple(int(o) for o in relabel)
    if len(offsets) != len(paths) or min(offsets) < 0:
        raise ValueError(f"relabel needs one offset >= 0 per file ({len(paths)}), got {offsets}")
    return offsets


class BatchTooLargeError(ValueError):
    """A batch larger than what a rank holds of a file. ``per_rank``: each file's samples
    per rank; ``weights``: the mixing weights; ``fits``: the largest ``batch_size`` that
    fits (None: none does). The trainer rephrases it in its own settings' names."""

    def __init__(
        self, message: str, *, path: str, per_rank: list[int], weights: list[float],
        fits: int | None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.path, self.per_rank, self.weights, self.fits = path, per_rank, weights, fits


def _check_batch_fits(
    loaders: Sequence[FileLoader],
    batch_size: int,
    weights: Sequence[float],
    world_size: int,
) -> None:
    """A batch larger than what a rank holds: say so, and which batch size would fit."""
    if all(len(ld) > 0 for ld in loaders):
        return
    per_rank = [-(-len(ld.indices) // world_size) for ld in loaders]
    fits = next(
        (
            b
            for b in range(batch_size - 1, len(weights) - 1, -1)
            if all(s <= n for s, n in zip(split_batch(b, weights), per_rank, strict=True))
        ),
        None,
    )
    k = next(i for i, ld in enumerate(loaders) if per_rank[i] < ld.batch_size)
    share = f"its share of the batch ({loaders[k].batch_size} of {batch_size})"
    ranks = f" per rank ({world_size} ranks)" if world_size > 1 else ""
    hint = f"use batch_size={fits} or less" if fits else "use fewer ranks or more data"
    raise BatchTooLargeError(
        f"{loaders[k].fname}: {per_rank[k]} samples{ranks} is fewer than {share}; {hint}",
        path=str(loaders[k].fname), per_rank=per_rank, weights=list(weights), fits=fits,
    )  # fmt: skip
