"""FFCV decoders for :class:`~vicmae_data.format.frames.WebPFramesField`.

:class:`WebPFramesDecoder` is the loader's hot path: per batch, its generated function (the
only code compiled per process) gathers each sample's blob address and frame table size
from ffcv's memory reader and calls :func:`~vicmae_data.load.kernels.decode_batch`, which
draws frames, crops and flips from (seed, epoch, sample index) and decodes only those
frames, across threads, from numba's on-disk cache.

Output per sample: ``uint8[num_views, H, W, 3]`` (channels last: what libwebp and OpenCV
write). The loader turns the batch into a ``[B, num_views, 3, H, W]`` tensor with a
``permute``, which is a view (no copy) on the CPU. For ``sampling="clip"`` the views are the
clip's ``T`` frames in time order.

The epoch is not known when the pipeline is compiled, and numba freezes arrays captured by
compiled code as constants; the decoder therefore keeps the epoch in a small control block
it owns and the compiled code copies it in (by address, with ``memcpy``) at the start of
each batch. A frame that fails to decode leaves its view black and is counted in
:attr:`failures`; with ``check_crc`` a sample whose bytes fail their CRC32 is not decoded
(all its views black) and counted in :attr:`crc_failures`; both name their samples
(:attr:`failed_samples`).

Buffers are sized from the rows the loader reads (``rows``), which it has checked against
the file first (:mod:`vicmae_data.load.rows`): a damaged row never sizes a buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from numba import njit

from vicmae_data.load.crops import view_plan
from vicmae_data.load.kernels import (
    CONTROL_CRC,
    CONTROL_EPOCH,
    CONTROL_FAILED,
    CONTROL_NAMED,
    CONTROL_NAMES,
    CONTROL_WORDS,
    KNOB_CHECK_CRC,
    KNOB_CONTROL,
    KNOB_FLAGS,
    KNOB_SEED,
    NUM_KNOBS,
    decode_gathered,
    decode_mapped,
    kernel_table,
    sample_arrays,
)
from vicmae_data.load.memory import read_mapped
from vicmae_data.load.native.cvresize import HEADER_WORDS
from vicmae_data.load.native.libwebp import CONFIG_WORDS


class WebPFramesDecoder(Operation):
    """Sample frames, decode only those with libwebp, random-resized-crop and flip each view.

    Args:
        num_views: views per sample (2 in ViC-MAE; a clip's frame count for ``"clip"``).
        resolution: output side (square views).
        sampling: a name in :data:`~vicmae_data.load.samplers.SAMPLERS` (``"distant"``,
            ``"continuous"``, ``"center"``, ``"clip"``).
        delta: maximum frame separation for ``"continuous"``.
        seed: base seed; a sample's draws depend on (seed, epoch, sample index) only.
        train: ``False`` gives deterministic views: centre frames, centre crops and no flip,
            or for a clip the ``test_view``.
        video_scale / image_scale: crop area range for videos / still images.
        image_flags: uint8 per sample, 1 for a still image (default: a one-frame sample);
            a one-frame video gets the video crop range.
        ratio: crop aspect-ratio range.
        center_fraction: evaluation crop side / short side.
        clip_stride: ``"clip"``: the window is ``num_views * clip_stride`` stored frames.
        test_view: ``"clip"`` with ``train=False``: ``(k, K, j, J)``, temporal view ``k`` of
            ``K`` and spatial view ``j`` of ``J`` (:func:`~vicmae_data.load.crops.view_plan`).
        flip: ``False``: never flip in training (Something-Something v2, whose labels say
            "left to right").
        check_crc: check each sample's CRC32 before decoding it.
        rows: the samples the loader reads (default: all); buffers are sized from them.
    """

    def __init__(
        self,
        num_views: int = 2,
        resolution: int = 224,
        sampling: str = "distant",
        delta: int = 8,
        seed: int = 0,
        train: bool = True,
        video_scale: tuple[float, float] = (0.5, 1.0),
        image_scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        center_fraction: float = 224 / 256,
        image_flags: np.ndarray | None = None,
        clip_stride: int = 4,
        test_view: tuple[int, int, int, int] | None = None,
        check_crc: bool = False,
        rows: np.ndarray | None = None,
        flip: bool = True,
    ) -> None:
        super().__init__()
        if num_views < 1 or resolution < 1 or delta < 0:
            raise ValueError("num_views and resolution must be >= 1 and delta >= 0")
        self.plan = view_plan(
            sampling, train=train, delta=delta, clip_stride=clip_stride, test_view=test_view,
            flip=flip,
        )  # fmt: skip
        self.sampling = sampling
        self.num_views = int(num_views)
        self.resolution = int(resolution)
        self.delta = int(delta)
        self.seed = int(seed)
        self.train = bool(train)
        self.check_crc = bool(check_crc)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.settings = np.array(
            [*video_scale, *image_scale, *ratio, center_fraction], dtype=np.float64
        )
        # draw_view_params picks the image range for T == 1: a one-frame video is drawn
        # with these settings instead, whose image range is the video range.
        self.video_settings = np.array(
            [*video_scale, *video_scale, *ratio, center_fraction], dtype=np.float64
        )
        self.image_flags = (
            None if image_flags is None else np.ascontiguousarray(image_flags, dtype=np.uint8)
        )
        # Read/written by the compiled code through its address (kernels.CONTROL_*).
        self.control = np.zeros(CONTROL_WORDS, dtype=np.int64)

    @property
    def epoch(self) -> int:
        return int(self.control[CONTROL_EPOCH])

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next batches are drawn for (part of every sample's RNG key)."""
        self.control[CONTROL_EPOCH] = epoch

    @property
    def failures(self) -> int:
        """Frames that libwebp could not decode so far (their views were left black)."""
        return int(self.control[CONTROL_FAILED])

    @property
    def crc_failures(self) -> int:
        """Samples whose CRC32 check failed so far (``check_crc``; their views are black)."""
        return int(self.control[CONTROL_CRC])

    @property
    def failed_samples(self) -> list[int]:
        """The first samples (up to 16) with a failed frame or CRC since
        :meth:`clear_failed_samples`."""
        named = min(int(self.control[CONTROL_NAMED]), CONTROL_WORDS - CONTROL_NAMES)
        return self.control[CONTROL_NAMES : CONTROL_NAMES + named].tolist()

    def clear_failed_samples(self) -> None:
        """Forget the named samples (the counts stay); call while no batch is decoded."""
        self.control[CONTROL_NAMED] = 0

    def declare_state_and_memory(
        self, previous_state: State
    ) -> tuple[State, tuple[AllocationQuery, ...]]:
        rows = self.metadata if self.rows is None else self.metadata[self.rows]
        heights = rows["height"].astype(np.uint64)
        widths = rows["width"].astype(np.uint64)
        max_pixels = int((heights * widths).max()) if len(heights) else 1
        V, R = self.num_views, self.resolution
        out_shape = (V, R, R, 3)
        u8 = np.dtype("<u1")
        return (
            replace(previous_state, jit_mode=True, shape=out_shape, dtype=u8),
            (
                AllocationQuery(out_shape, u8),
                AllocationQuery((max_pixels * 3,), u8),  # one decoded frame or crop
                # WebPDecoderConfig, then the resize's CvMat headers
                AllocationQuery((CONFIG_WORDS + HEADER_WORDS,), np.dtype("<i8")),
                AllocationQuery((V, 6), np.dtype("<i4")),  # per-view parameters
                AllocationQuery((1,), np.dtype("<u8")),  # RNG state
            ),
        )

    def generate_code(self) -> Callable:
        mem_read = self.memory_read
        fns = kernel_table()  # this process's addresses: frozen into this closure only
        plan = self.plan  # holds this process's sampler address, as fns
        settings = np.stack([self.settings, self.video_settings])  # row per crop range
        # The flags by address, as the epoch: numba would freeze an array into the code.
        flags_address = self.image_flags.ctypes.data if self.image_flags is not None else 0

        # Scalars travel in an array: numba would specialise (and cache) per value.
        knobs = np.zeros(NUM_KNOBS, dtype=np.int64)
        knobs[KNOB_CONTROL] = self.control.ctypes.data
        knobs[KNOB_SEED] = self.seed
        knobs[KNOB_FLAGS] = flags_address
        knobs[KNOB_CHECK_CRC] = self.check_crc
        if mem_read is read_mapped:
            # The memory-mapped readers: all the work is in cached code, this shim is the
            # only thing numba compiles per process (in milliseconds).

            def decode_from_map(batch_indices, my_storage, metadata, storage_state):
                destination, scratch, configs, all_params, rngs = my_storage
                return decode_mapped(fns, knobs, plan, batch_indices, metadata, storage_state,
                                     settings, destination, scratch, configs, all_params,
                                     rngs)  # fmt: skip

            return decode_from_map

        # Another reader (ffcv's process cache): the gathering loop calls its reader.
        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, scratch, configs, all_params, rngs = my_storage
            ptrs, sizes, T, H, W, crcs = sample_arrays(len(batch_indices))
            for i in range(len(batch_indices)):
                field = metadata[batch_indices[i]]
                blob = mem_read(field["ptr"], storage_state)
                ptrs[i] = blob.ctypes.data
                sizes[i] = blob.size
                T[i] = field["num_frames"]
                H[i] = field["height"]
                W[i] = field["width"]
                crcs[i] = field["crc32"]
            return decode_gathered(fns, knobs, plan, batch_indices, ptrs, sizes, T, H, W, crcs,
                                   settings, destination, scratch, configs, all_params,
                                   rngs)  # fmt: skip

        return decode


class WebPFrameCountDecoder(Operation):
    """The number of stored frames per sample (``int32[1]``): T = 1 marks an image."""

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        shape, dtype = (1,), np.dtype("<i4")
        return (
            replace(previous_state, jit_mode=True, shape=shape, dtype=dtype),
            AllocationQuery(shape, dtype),
        )

    def generate_code(self) -> Callable:
        def count(batch_indices, destination, metadata, storage_state):
            return _frame_counts(batch_indices, destination, metadata)

        return count


class SampleIndexDecoder(Operation):
    """Each sample's index in its .beton (``int64[1]``), for ``Batch.indices``.

    Attached to any field with ``PipelineSpec(field, SampleIndexDecoder(), [ToTensor()])``:
    it reads nothing from the file, only the indices ffcv hands every decoder.
    """

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        shape, dtype = (1,), np.dtype("<i8")
        return (
            replace(previous_state, jit_mode=True, shape=shape, dtype=dtype),
            AllocationQuery(shape, dtype),
        )

    def generate_code(self) -> Callable:
        def indices(batch_indices, destination, metadata, storage_state):
            return _sample_indices(batch_indices, destination)

        return indices


# ffcv compiles what generate_code returns (per process); the work is in these, which
# numba caches on disk.
@njit(nogil=True, cache=True)
def _frame_counts(batch_indices, destination, metadata):
    for ix in range(len(batch_indices)):
        destination[ix, 0] = metadata[batch_indices[ix]]["num_frames"]
    return destination[: len(batch_indices)]


@njit(nogil=True, cache=True)
def _sample_indices(batch_indices, destination):
    for ix in range(len(batch_indices)):
        destination[ix, 0] = batch_indices[ix]
    return destination[: len(batch_indices)]
