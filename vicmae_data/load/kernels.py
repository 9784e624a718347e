"""The loader's compiled work per batch, cached on disk: draw, decode, crop, resize, flip.

:func:`decode_batch` runs across the samples of a batch with ``prange`` (threads, no GIL).
Per sample it draws frames, crops and flips (:func:`~vicmae_data.load.crops.
draw_view_params`), reads the frame table, decodes only the sampled frames with libwebp (a
frame used by one view straight into its crop; a frame shared by several views whole,
once), resizes each crop with ffcv's OpenCV resize and flips it in place. With the CRC
check on, a sample's whole blob is first checked against its row's CRC32 (zlib's
``crc32``); one that fails is not decoded (its views stay black) and is counted.

Every C function (libwebp's, ffcv's resize and memcpy, zlib's crc32) is called through the
address table :func:`kernel_table` passed as the first argument
(:mod:`vicmae_data.load.native.ccall`), so all of this is compiled once per machine and loaded
from numba's cache by later processes.

Each decoder owns a small int64 control block (:data:`CONTROL_WORDS`), read and written by
address: the epoch, the frames that failed to decode, the samples that failed their CRC,
and the first :data:`NAMED_MAX` samples with either since the names were last cleared.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import partial

import numba
import numpy as np
from ffcv.libffcv import ctypes_memcopy, ctypes_resize
from numba import njit, prange, types

from vicmae_data.load.crops import draw_view_params
from vicmae_data.load.native import libwebp
from vicmae_data.load.native.ccall import address_of, c_function, symbol_address
from vicmae_data.load.native.cvresize import cv_resize_address, resize_view

FN_RESIZE, FN_MEMCPY, FN_CV_RESIZE, FN_CRC32 = 3, 4, 5, 6  # after libwebp's three
_call_resize = c_function(types.int32, *([types.int64] * 11))
_call_memcpy = c_function(types.int32, types.uintp, types.uintp, types.uint64)
# uLong crc32(uLong crc, const Bytef *buf, uInt len)
_call_crc32 = c_function(types.uint64, types.uint64, types.uintp, types.uint32)

# The control block of a decoder (int64 words).
CONTROL_EPOCH, CONTROL_FAILED, CONTROL_CRC, CONTROL_NAMED, CONTROL_NAMES = 0, 1, 2, 3, 4
NAMED_MAX = 16
CONTROL_WORDS = CONTROL_NAMES + NAMED_MAX

_njit = partial(njit, nogil=True, fastmath=True, error_model="numpy", cache=True)


@njit(parallel=True, cache=True)
def _parallel_touch(n: int) -> int:
    total = 0
    for i in prange(n):
        total += i
    return total


def concurrent_parallel_regions_ok() -> bool:
    """Whether two threads may run numba parallel code at once (tbb, omp: yes; workqueue:
    no, numba aborts). Which layer numba picked is known once parallel code has run."""
    _parallel_touch(4)
    return numba.threading_layer() != "workqueue"


def crc32_address() -> int:
    """Address of zlib's ``crc32`` in this process, or 0 where no libz is found."""
    return symbol_address(ctypes.util.find_library("z"), "crc32")


def kernel_table() -> np.ndarray:
    """int64 addresses of every C function the kernels call, valid in this process."""
    extra = [
        address_of(ctypes_resize),
        address_of(ctypes_memcopy),
        cv_resize_address(),
        crc32_address(),
    ]
    return np.concatenate([libwebp.function_table(), np.array(extra, dtype=np.int64)])


@_njit
def resize_into(fns, source, r0: int, r1: int, c0: int, c1: int, out, scratch) -> None:
    """``source[r0:r1, c0:c1]`` (uint8 [h, w, 3]) resized into ``out``: bilinear below a
    factor of 2, area above (:mod:`vicmae_data.load.native.cvresize`); ffcv's area resize where
    OpenCV has no ``cvResize``."""
    if fns[FN_CV_RESIZE] != 0:
        resize_view(fns[FN_CV_RESIZE], source, r0, r1, c0, c1, out, scratch)
    else:
        _call_resize(fns[FN_RESIZE], 0, source.ctypes.data, source.shape[0], source.shape[1],
                     r0, r1, c0, c1, out.ctypes.data, out.shape[0], out.shape[1])  # fmt: skip


@_njit
def read_words(fns, address: int) -> tuple[int, int]:
    """The first two int64 at ``address`` (a decoder's control block: epoch, failures)."""
    pair = np.zeros(2, dtype=np.int64)
    _call_memcpy(fns[FN_MEMCPY], address, pair.ctypes.data, 16)
    return pair[0], pair[1]


@_njit
def crop_rows(fns, flags_address: int, sample_ids, T, use_row) -> None:
    """Row 1 of the settings for a one-frame sample the image flags (a uint8 per sample at
    ``flags_address``; 0: none given) mark as a video, else row 0."""
    byte = np.zeros(1, dtype=np.uint8)
    for i in range(len(sample_ids)):
        use_row[i] = 0
        if T[i] == 1 and flags_address != 0:
            _call_memcpy(fns[FN_MEMCPY], flags_address + sample_ids[i], byte.ctypes.data, 1)
            use_row[i] = 1 if byte[0] == 0 else 0


@_njit
def record_failures(fns, address: int, sample_ids, failed, crc_bad) -> None:
    """Count this batch's failed frames and CRC failures in the control block at
    ``address``, and name their samples while there is room (once per batch, outside the
    parallel loop)."""
    block = np.zeros(CONTROL_WORDS, dtype=np.int64)
    _call_memcpy(fns[FN_MEMCPY], address, block.ctypes.data, 8 * CONTROL_WORDS)
    for i in range(len(sample_ids)):
        if failed[i] == 0 and crc_bad[i] == 0:
            continue
        block[CONTROL_FAILED] += failed[i]
        block[CONTROL_CRC] += crc_bad[i]
        named = block[CONTROL_NAMED]
        if named < NAMED_MAX:
            block[CONTROL_NAMES + named] = sample_ids[i]
            block[CONTROL_NAMED] = named + 1
    _call_memcpy(fns[FN_MEMCPY], block.ctypes.data, address, 8 * CONTROL_WORDS)


@_njit
def crc_matches(fns, blob_ptr: int, blob_size: int, crc: int) -> bool:
    """Whether the ``blob_size`` bytes at ``blob_ptr`` have the CRC32 ``crc`` (zlib's)."""
    if fns[FN_CRC32] == 0 or blob_size <= 0:
        return False
    got = _call_crc32(fns[FN_CRC32], 0, blob_ptr, blob_size)
    return np.int64(got & np.uint64(0xFFFFFFFF)) == np.int64(crc)


@_njit
def frame_range(fns, blob_ptr: int, blob_size: int, f: int) -> tuple[int, int]:
    """Byte range of frame ``f`` in a sample blob (its uint32 offset table); (0, 0) if bad."""
    if f < 0 or 4 * (f + 2) > blob_size:
        return 0, 0
    pair = np.zeros(2, dtype=np.uint32)
    _call_memcpy(fns[FN_MEMCPY], blob_ptr + 4 * f, pair.ctypes.data, 8)
    start, end = np.int64(pair[0]), np.int64(pair[1])
    if not 0 < start <= end <= blob_size:
        return 0, 0
    return start, end


@_njit
def flip_columns(view: np.ndarray) -> None:
    """Mirror an (H, W, 3) uint8 image left-right in place.

    Pixel pairs are swapped along each row read as flat bytes: twice as fast as indexing
    (row, column, channel), which matters because half of all views are flipped.
    """
    H, W = view.shape[0], view.shape[1]
    flat = view.reshape(H, W * 3)
    for r in range(H):
        row = flat[r]
        i, j = 0, (W - 1) * 3
        while i < j:
            a0, a1, a2 = row[i], row[i + 1], row[i + 2]
            row[i], row[i + 1], row[i + 2] = row[j], row[j + 1], row[j + 2]
            row[j], row[j + 1], row[j + 2] = a0, a1, a2
            i += 3
            j -= 3


@_njit
def decode_views(fns, blob_ptr, blob_size, H, W, params, buf, config, out) -> int:
    """Decode the frames ``params`` asks for and write every view into ``out`` (V, R, R, 3).

    Views are visited in frame order so views sharing a frame are adjacent: that frame is
    decoded whole once into ``buf``; a frame used by one view only is decoded straight into
    its crop (from the even pixel at or before the crop's origin, where libwebp starts a
    cropped decode, the extra row or column left out by the resize). Returns the number of
    views whose frame failed to decode (left black).
    """
    V = params.shape[0]
    scratch = config[libwebp.CONFIG_WORDS :]  # the CvMat headers of the resize
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
        start, end = frame_range(fns, blob_ptr, blob_size, f)
        if end == 0:
            ok = 0
        elif shared:
            ok = 1
            if whole != f:
                ok = libwebp.decode_rgb_into_fn(fns, blob_ptr + start, end - start, buf, H, W)
                whole = f if ok == 1 else -1
            if ok == 1:
                frame = buf[: H * W * 3].reshape(H, W, 3)
                resize_into(fns, frame, top, top + h, left, left + w, out[v], scratch)
        else:
            whole = -1
            dt, dl = top & 1, left & 1  # libwebp's cropped decode starts on even pixels
            ok = libwebp.decode_crop_into_fn(
                fns, blob_ptr + start, end - start, config, buf, top - dt, left - dl,
                h + dt, w + dl,
            )  # fmt: skip
            if ok == 1:
                crop = buf[: (h + dt) * (w + dl) * 3].reshape(h + dt, w + dl, 3)
                resize_into(fns, crop, dt, dt + h, dl, dl + w, out[v], scratch)
        if ok != 1:
            out[v][:] = 0
            failed += 1
        elif params[v, 5] == 1:
            flip_columns(out[v])
    return failed


@njit(nogil=True, fastmath=True, error_model="numpy", cache=True, parallel=True)
def decode_batch(
    fns, blob_ptrs, blob_sizes, T, H, W, crcs, use_row, sample_ids, seed, epoch, plan,
    check_crc, settings, all_params, rngs, scratch, configs, destination, failed, crc_bad,
) -> None:  # fmt: skip
    """Draw and decode every sample of a batch, in parallel (``failed[i]``: black views;
    ``crc_bad[i]``: 1 where ``check_crc`` found the blob damaged, nothing decoded).

    ``plan`` is :func:`~vicmae_data.load.crops.view_plan`'s; ``settings[use_row[i]]`` are
    sample ``i``'s crop settings (row 1 gives a one-frame video the video crop range, see
    :class:`~vicmae_data.load.decoder.WebPFramesDecoder`).
    """
    for i in prange(len(sample_ids)):
        params = all_params[i]
        draw_view_params(seed, epoch, sample_ids[i], T[i], H[i], W[i], plan,
                         settings[use_row[i]], params, rngs[i])  # fmt: skip
        crc_bad[i] = 0
        if check_crc and not crc_matches(fns, blob_ptrs[i], blob_sizes[i], crcs[i]):
            crc_bad[i] = 1
            failed[i] = 0
            destination[i][:] = 0
            continue
        failed[i] = decode_views(
            fns, blob_ptrs[i], blob_sizes[i], H[i], W[i], params, scratch[i], configs[i],
            destination[i],
        )  # fmt: skip


@_njit
def gather_mapped(batch_indices, metadata, mem_state, ptrs, sizes, T, H, W, crcs) -> None:
    """Blob address, size, frame table and CRC32 of each sample, from a memory-mapped file.

    ``mem_state`` is (whole file as uint8, sorted allocation pointers, their sizes), the
    state of :class:`~vicmae_data.load.memory.ReadOnlyMmapManager`. A pointer that is not an
    allocation, or runs past the file, gives size 0 (every view black, counted), never a
    read outside the file.
    """
    data, alloc_ptrs, alloc_sizes = mem_state
    base = data.ctypes.data
    for i in range(len(batch_indices)):
        row = metadata[batch_indices[i]]
        address = np.int64(row["ptr"])
        k = np.searchsorted(alloc_ptrs, row["ptr"])
        size = 0
        if k < len(alloc_ptrs) and alloc_ptrs[k] == row["ptr"] and address < len(data):
            size = min(np.int64(alloc_sizes[k]), len(data) - address)
        ptrs[i] = base + address
        sizes[i] = size
        T[i] = row["num_frames"]
        H[i] = row["height"]
        W[i] = row["width"]
        crcs[i] = row["crc32"]


@_njit
def sample_arrays(n: int):
    """Per sample of a batch: blob address, blob size, frame count, height, width, CRC32."""
    return (np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))  # fmt: skip


KNOB_CONTROL, KNOB_SEED, KNOB_FLAGS, KNOB_CHECK_CRC = 0, 1, 2, 3
NUM_KNOBS = 4


@_njit
def decode_gathered(
    fns, knobs, plan, batch_indices, ptrs, sizes, T, H, W, crcs, settings, destination,
    scratch, configs, all_params, rngs,
):  # fmt: skip
    """One batch whose blobs are gathered: read the epoch, decode, count failures.

    ``knobs`` is int64 [control address, seed, image flags address, check CRC] and
    ``plan`` the decoder's :func:`~vicmae_data.load.crops.view_plan`: arrays, not scalars,
    because numba specialises compiled code on the value of every constant scalar a closure
    passes in (one cache entry per seed), but not on an array's content.
    """
    control, seed = knobs[KNOB_CONTROL], knobs[KNOB_SEED]
    n = len(batch_indices)
    use_row = np.zeros(n, dtype=np.int64)
    crop_rows(fns, knobs[KNOB_FLAGS], batch_indices, T, use_row)
    epoch = read_words(fns, control)[0]
    failed = np.zeros(n, dtype=np.int64)
    crc_bad = np.zeros(n, dtype=np.int64)
    decode_batch(fns, ptrs, sizes, T, H, W, crcs, use_row, batch_indices, seed, epoch, plan,
                 knobs[KNOB_CHECK_CRC] != 0, settings, all_params, rngs, scratch, configs,
                 destination, failed, crc_bad)  # fmt: skip
    if failed.sum() + crc_bad.sum() > 0:
        record_failures(fns, control, batch_indices, failed, crc_bad)
    return destination[:n]


@_njit
def decode_mapped(
    fns, knobs, plan, batch_indices, metadata, mem_state, settings, destination, scratch,
    configs, all_params, rngs,
):  # fmt: skip
    """One batch from a memory-mapped .beton (:func:`gather_mapped`, then decode)."""
    ptrs, sizes, T, H, W, crcs = sample_arrays(len(batch_indices))
    gather_mapped(batch_indices, metadata, mem_state, ptrs, sizes, T, H, W, crcs)
    return decode_gathered(fns, knobs, plan, batch_indices, ptrs, sizes, T, H, W, crcs,
                           settings, destination, scratch, configs, all_params,
                           rngs)  # fmt: skip
