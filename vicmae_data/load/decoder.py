"""FFCV decoders for :class:`~vicmae_data.format.frames.WebPFramesField`.

:class:`WebPFramesDecoder` is the loader's hot path. Per sample, in numba-compiled code run
across samples with ``prange`` (threads, no GIL):

1. read the frame table at the start of the sample's blob;
2. draw frame indices, crops and flips with :func:`~vicmae_data.load.crops.draw_view_params`
   from (seed, epoch, sample index), so results do not depend on thread scheduling;
3. decode only the sampled frames with libwebp: a frame used by one view is decoded
   straight into its crop (libwebp crops while decoding); a frame shared by several views
   (images, ``delta = 0``) is decoded whole once and every view crops from it;
4. resize each crop to ``resolution`` with ffcv's compiled OpenCV resize, flip in place.

Output per sample: ``uint8[num_views, H, W, 3]`` (channels last: what libwebp and OpenCV
write). The loader turns the batch into a ``[B, num_views, 3, H, W]`` tensor with a
``permute``, which is a view (no copy) on the CPU.

The epoch is not known when the pipeline is compiled, and numba freezes arrays captured by
compiled code as constants; the decoder therefore keeps the epoch in a small array it owns
and the compiled code copies it in (by address, with ``memcpy``) at the start of each batch.
A frame that fails to decode leaves its view black and is counted in :attr:`failures`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np
from ffcv.libffcv import ctypes_memcopy, resize_crop
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from numba import njit

from vicmae_data.format.libwebp import CONFIG_WORDS, decode_crop_into_ptr, decode_rgb_into_ptr
from vicmae_data.load.crops import draw_view_params
from vicmae_data.load.samplers import SAMPLING_MODES


class WebPFramesDecoder(Operation):
    """Sample frames, decode only those with libwebp, random-resized-crop and flip each view.

    Args:
        num_views: views per sample (2 in ViC-MAE).
        resolution: output side (square views).
        sampling: ``"distant"``, ``"continuous"`` or ``"center"``.
        delta: maximum frame separation for ``"continuous"``.
        seed: base seed; a sample's draws depend on (seed, epoch, sample index) only.
        train: ``False`` gives centre frames, centre crops and no flip.
        video_scale / image_scale: crop area range for videos / still images.
        image_flags: uint8 per sample, 1 for a still image (default: a one-frame sample);
            a one-frame video gets the video crop range.
        ratio: crop aspect-ratio range.
        center_fraction: evaluation crop side / short side.
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
    ) -> None:
        super().__init__()
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {sorted(SAMPLING_MODES)}, not {sampling!r}")
        if num_views < 1 or resolution < 1 or delta < 0:
            raise ValueError("num_views and resolution must be >= 1 and delta >= 0")
        self.num_views = int(num_views)
        self.resolution = int(resolution)
        self.mode = SAMPLING_MODES[sampling]
        self.delta = int(delta)
        self.seed = int(seed)
        self.train = bool(train)
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
        # [epoch, failures]; read/written by the compiled code through its address.
        self.control = np.zeros(2, dtype=np.int64)

    @property
    def epoch(self) -> int:
        return int(self.control[0])

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next batches are drawn for (part of every sample's RNG key)."""
        self.control[0] = epoch

    @property
    def failures(self) -> int:
        """Frames that libwebp could not decode so far (their views were left black)."""
        return int(self.control[1])

    def declare_state_and_memory(
        self, previous_state: State
    ) -> tuple[State, tuple[AllocationQuery, ...]]:
        heights = self.metadata["height"].astype(np.uint64)
        widths = self.metadata["width"].astype(np.uint64)
        max_pixels = int((heights * widths).max()) if len(heights) else 1
        V, R = self.num_views, self.resolution
        out_shape = (V, R, R, 3)
        u8 = np.dtype("<u1")
        return (
            replace(previous_state, jit_mode=True, shape=out_shape, dtype=u8),
            (
                AllocationQuery(out_shape, u8),
                AllocationQuery((max_pixels * 3,), u8),  # one decoded frame or crop
                AllocationQuery((CONFIG_WORDS,), np.dtype("<i8")),  # WebPDecoderConfig
                AllocationQuery((V, 6), np.dtype("<i4")),  # per-view parameters
                AllocationQuery((1,), np.dtype("<u8")),  # RNG state
            ),
        )

    def generate_code(self) -> Callable:
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        draw = draw_view_params
        views = _decode_views
        read_control, add_failures = _read_control, _add_failures
        mode, delta, seed, train = self.mode, self.delta, self.seed, self.train
        settings, video_settings = self.settings, self.video_settings
        control_address = self.control.ctypes.data
        read_flag = _read_flag
        has_flags = self.image_flags is not None
        flags_address = self.image_flags.ctypes.data if has_flags else 0

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, scratch, configs, all_params, rngs = my_storage
            epoch = read_control(control_address)
            failed = np.zeros(len(batch_indices), dtype=np.int64)
            for dst_ix in my_range(len(batch_indices)):
                sample_id = batch_indices[dst_ix]
                field = metadata[sample_id]
                blob = mem_read(field["ptr"], storage_state)
                T = np.int64(field["num_frames"])
                H = np.int64(field["height"])
                W = np.int64(field["width"])
                params = all_params[dst_ix]
                use = settings
                if has_flags and T == 1 and read_flag(flags_address, sample_id) == 0:
                    use = video_settings  # a one-frame video
                draw(seed, epoch, sample_id, T, H, W, mode, delta, train, use, params,
                     rngs[dst_ix])  # fmt: skip
                failed[dst_ix] = views(
                    blob.ctypes.data,
                    blob.size,
                    H,
                    W,
                    params,
                    scratch[dst_ix],
                    configs[dst_ix],
                    destination[dst_ix],
                )
            total = failed.sum()
            if total > 0:
                add_failures(control_address, total)
            return destination[: len(batch_indices)]

        decode.is_parallel = True
        return decode


# The per-sample work, compiled once per process (not per loader) and called from the
# generated prange loop; parfor analysis of a small loop is what keeps compile time low.
# Not cached on disk: numba cannot cache code that calls ctypes function pointers.
_njit = partial(njit, nogil=True, fastmath=True, error_model="numpy")
_decode_full = decode_rgb_into_ptr  # already compiled (nogil) dispatchers
_decode_crop = decode_crop_into_ptr
_resize = _njit(resize_crop)


@_njit
def _frame_range(blob_ptr: int, blob_size: int, f: int) -> tuple[int, int]:
    """Byte range of frame ``f`` in a sample blob (its uint32 offset table); (0, 0) if bad."""
    if 4 * (f + 2) > blob_size:
        return 0, 0
    pair = np.zeros(2, dtype=np.uint32)
    ctypes_memcopy(blob_ptr + 4 * f, pair.ctypes.data, 8)
    start, end = np.int64(pair[0]), np.int64(pair[1])
    if not 0 < start <= end <= blob_size:
        return 0, 0
    return start, end


@_njit
def _flip_columns(view: np.ndarray) -> None:
    """Mirror an (H, W, 3) image left-right in place."""
    W = view.shape[1]
    for r in range(view.shape[0]):
        for c in range(W // 2):
            for ch in range(3):
                tmp = view[r, c, ch]
                view[r, c, ch] = view[r, W - 1 - c, ch]
                view[r, W - 1 - c, ch] = tmp


@_njit
def _decode_views(blob_ptr, blob_size, H, W, params, buf, config, out) -> int:
    """Decode the frames ``params`` asks for and write every view into ``out`` (V, R, R, 3).

    Views are visited in frame order so views sharing a frame are adjacent: that frame is
    decoded whole once into ``buf``; a frame used by one view only is decoded straight into
    its crop. Returns the number of views whose frame failed to decode (left black).
    """
    V = params.shape[0]
    order = np.argsort(params[:, 0].copy())
    whole = -1  # the frame currently decoded whole in buf, if any
    failed = 0
    for o in range(V):
        v = order[o]
        f = params[v, 0]
        top, left, h, w = params[v, 1], params[v, 2], params[v, 3], params[v, 4]
        shared = (o > 0 and params[order[o - 1], 0] == f) or (
            o + 1 < V and params[order[o + 1], 0] == f
        )
        start, end = _frame_range(blob_ptr, blob_size, f)
        if end == 0:
            ok = 0
        elif shared:
            ok = 1
            if whole != f:
                ok = _decode_full(blob_ptr + start, end - start, buf, H, W)
                whole = f if ok == 1 else -1
            if ok == 1:
                frame = buf[: H * W * 3].reshape(H, W, 3)
                _resize(frame, top, top + h, left, left + w, out[v])
        else:
            whole = -1
            ok = _decode_crop(blob_ptr + start, end - start, config, buf, top, left, h, w)
            if ok == 1:
                crop = buf[: h * w * 3].reshape(h, w, 3)
                _resize(crop, 0, h, 0, w, out[v])
        if ok != 1:
            out[v][:] = 0
            failed += 1
        elif params[v, 5] == 1:
            _flip_columns(out[v])
    return failed


@_njit
def _read_control(address: int) -> int:
    """The epoch stored at ``address`` (the decoder's control array), copied by memcpy."""
    pair = np.zeros(2, dtype=np.int64)
    ctypes_memcopy(address, pair.ctypes.data, 16)
    return pair[0]


@_njit
def _read_flag(address: int, index: int) -> int:
    """Byte ``index`` of the array at ``address`` (the decoder's image flags)."""
    byte = np.zeros(1, dtype=np.uint8)
    ctypes_memcopy(address + index, byte.ctypes.data, 1)
    return byte[0]


@_njit
def _add_failures(address: int, count: int) -> None:
    """control[1] += count (once per batch, outside the parallel loop)."""
    pair = np.zeros(2, dtype=np.int64)
    ctypes_memcopy(address, pair.ctypes.data, 16)
    pair[1] += count
    ctypes_memcopy(pair.ctypes.data, address, 16)


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
            for ix in range(len(batch_indices)):
                destination[ix, 0] = metadata[batch_indices[ix]]["num_frames"]
            return destination[: len(batch_indices)]

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
            for ix in range(len(batch_indices)):
                destination[ix, 0] = batch_indices[ix]
            return destination[: len(batch_indices)]

        return indices
