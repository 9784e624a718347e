"""Which samples' table rows the loader can trust, checked against the file before any buffer
is sized.

A sample's metadata row (pointer, size, frame count, height, width: no CRC covers it) says
how large the decoder's buffers must be. A flipped bit there once asked for 271 GiB. The
file's own tables catch part of it (:meth:`~vicmae_data.format.beton.BetonFile.
damaged_rows`: a pointer off its allocation, a frame table larger than its blob, a side
above libwebp's 16383); :func:`check_rows` then reads each remaining row's frame table and
first frame header (the first page or two of its blob) and leaves out a row

- whose frame count disagrees with its frame table (the table of T frames starts with the
  offset ``4 * (T + 1)``), or whose table runs past its blob;
- whose frame size disagrees with its first frame's WebP header (libwebp's ``WebPGetInfo``),
  the frame the writer stored at that size (every frame of a sample has one size);
- whose frames' headers cannot be read (among its first :data:`HEADER_TRIES`) and that
  claims a larger frame than every row that could be checked: it would size the buffers
  alone. A smaller one is kept: decoding its frames fails and is counted, as for any
  damaged frame.

The cost is a read of those pages per sample at start-up (measured in ``make
bench-loader``): the file is mapped with ``MADV_RANDOM`` (a page fault reads its page, not
a read-ahead window) and the rows are checked on every core (parallel faults, for storage
where one read waits on the network).
"""

from __future__ import annotations

import ctypes
import mmap
import warnings

import numpy as np
from numba import njit, prange, types

from vicmae_data.format.beton import BetonError, BetonFile
from vicmae_data.load.native import libwebp
from vicmae_data.load.native.ccall import address_of, c_function

HEADER_TRIES = 4
OK, COUNT, TABLE, SIZE, UNREADABLE = range(5)
_REASONS = {
    COUNT: "its frame count disagrees with its frame table",
    TABLE: "its frame table runs past its blob",
    UNREADABLE: "no frame header is readable and its frame size is larger than any checked row's",
}

# int WebPGetInfo(const uint8_t* data, size_t size, int* width, int* height)
_call_get_info = c_function(types.int32, types.uintp, types.uintp, types.uintp, types.uintp)


def get_info_address() -> int:
    """Address of libwebp's ``WebPGetInfo`` in this process (the loader's libwebp)."""
    return address_of(ctypes.CDLL(libwebp.LIBWEBP_PATH).WebPGetInfo)


@njit(cache=True)
def _u32(data: np.ndarray, at: int) -> int:
    return (np.int64(data[at]) | (np.int64(data[at + 1]) << 8)
            | (np.int64(data[at + 2]) << 16) | (np.int64(data[at + 3]) << 24))  # fmt: skip


@njit(cache=True, parallel=True)
def check_blobs(get_info, data, ptrs, sizes, T, H, W, codes, headers) -> None:
    """Per row: ``codes[i]`` (:data:`OK`, :data:`COUNT`, :data:`TABLE`, :data:`SIZE`, or
    :data:`UNREADABLE` when no header of the first frames reads) and ``headers[i]`` the
    (height, width) of the first readable frame header. ``data`` is the whole file; the
    rows' pointers and sizes must lie inside it (the file's tables were checked first)."""
    for i in prange(len(ptrs)):
        wh = np.zeros(2, dtype=np.int32)
        p, size, t = np.int64(ptrs[i]), np.int64(sizes[i]), np.int64(T[i])
        codes[i] = OK
        if _u32(data, p) != 4 * (t + 1):
            codes[i] = COUNT
            continue
        last = _u32(data, p + 4 * t)
        if last > size:
            codes[i] = TABLE
            continue
        codes[i] = UNREADABLE
        for f in range(min(t, HEADER_TRIES)):
            start, end = _u32(data, p + 4 * f), _u32(data, p + 4 * f + 4)
            if not 4 * (t + 1) <= start <= end <= last:
                codes[i] = TABLE
                break
            address = data.ctypes.data + p + start
            if _call_get_info(get_info, address, end - start, wh.ctypes.data,
                              wh.ctypes.data + 4) != 0:  # fmt: skip
                headers[i, 0], headers[i, 1] = wh[1], wh[0]
                codes[i] = OK if (wh[1] == H[i] and wh[0] == W[i]) else SIZE
                break


def check_rows(beton: BetonFile) -> dict[int, str]:
    """Samples whose table rows cannot be trusted: index -> reason (see the module doc)."""
    damage = dict(beton.damaged_rows())
    rows = beton.frames_meta
    todo = np.setdiff1d(np.arange(len(beton)), np.fromiter(damage, dtype=np.int64))
    if len(todo) == 0:
        return damage
    codes = np.zeros(len(todo), dtype=np.int64)
    headers = np.zeros((len(todo), 2), dtype=np.int64)
    picked = rows[todo]
    with open(beton.path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    m.madvise(mmap.MADV_RANDOM)
    data = np.frombuffer(m, dtype=np.uint8)
    check_blobs(get_info_address(), data, picked["ptr"].astype(np.int64),
                picked["size"].astype(np.int64), picked["num_frames"].astype(np.int64),
                picked["height"].astype(np.int64), picked["width"].astype(np.int64),
                codes, headers)  # fmt: skip
    # Unmapped when the last reference goes, never closed here: numba's first compile of
    # check_blobs in a process can keep its arguments alive until the garbage collector
    # runs, and closing a map an array still holds raises BufferError.
    del data, m
    pixels = picked["height"].astype(np.int64) * picked["width"].astype(np.int64)
    checked = pixels[codes == OK]
    largest = int(checked.max()) if len(checked) else None
    for k, (i, code) in enumerate(zip(todo.tolist(), codes.tolist(), strict=True)):
        if code == SIZE:
            h, w = headers[k]
            damage[i] = (
                f"its frame size {int(picked['height'][k])}x{int(picked['width'][k])} "
                f"disagrees with its frames' WebP header ({h}x{w})"
            )
        elif code == UNREADABLE:
            if largest is not None and pixels[k] > largest:
                damage[i] = _REASONS[UNREADABLE]
        elif code != OK:
            damage[i] = _REASONS[code]
    return dict(sorted(damage.items()))


def readable_samples(beton: BetonFile) -> np.ndarray | None:
    """The samples whose table rows can be trusted (None: all), checked before compiled
    code reads the file or sizes a buffer (:func:`~vicmae_data.load.rows.check_rows`).

    A damaged header, field table or allocation table was a :class:`BetonError` when the
    file was opened; samples whose rows are damaged are left out, named in one warning.
    """
    damaged = check_rows(beton)
    path = beton.path
    if not damaged:
        return None
    first, reason = next(iter(damaged.items()))
    k = len(damaged)
    shown = list(damaged)[:10]
    more = f" and {k - len(shown)} more" if k > len(shown) else ""
    warnings.warn(
        f"{path}: {k} sample{'s' if k > 1 else ''} left out, "
        f"{'their table rows are' if k > 1 else 'its table row is'} damaged (samples "
        f"{shown}{more}; sample {first}: {reason}); `vicmae-data verify {path}` lists them",
        stacklevel=3,
    )
    good = np.setdiff1d(np.arange(len(beton)), np.fromiter(damaged, dtype=np.int64))
    if len(good) == 0:
        raise BetonError(f"{path}: every sample's table row is damaged")
    return good
