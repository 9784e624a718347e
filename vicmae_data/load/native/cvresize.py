"""OpenCV's resize with a chosen interpolation, callable from cached numba code.

ffcv's compiled ``resize`` always uses ``INTER_AREA``. For the mild downscales of a random
resized crop (a 256 x 340 crop to 224 x 224 is a factor of 1.1 to 1.5) OpenCV's area
filter takes its fractional path: measured on this project's machines, ~550 us per view
against ~75 us for ``INTER_LINEAR`` (an upscale takes ~70 us either way), which made the
resize 30% of the loader's time. :func:`resize_view` picks ``INTER_LINEAR`` below a factor
of 2 (bilinear reads a 2 x 2 neighbourhood; below 2x it skips no source pixel, so it
aliases little) and ``INTER_AREA`` from 2 on, where the area filter is needed to
antialias and OpenCV's integer path is fast.

OpenCV 4 keeps its C API (``cvResize(const CvArr* src, CvArr* dst, int interpolation)``
in ``libopencv_imgproc``, the library ffcv's ``_libffcv`` links), which takes two
``CvMat`` headers; :func:`resize_view` writes them into a caller-owned int64 scratch
(``HEADER_WORDS``), as :mod:`vicmae_data.load.native.libwebp` writes ``WebPDecoderConfig``.
Layout from OpenCV's ``types_c.h`` (x86-64): ``int type; int step; int* refcount;
int hdr_refcount; uchar* data; int rows; int cols`` (40 bytes). Where no ``cvResize`` is
found (its address is 0) callers use ffcv's resize instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
from numba import njit, types

from vicmae_data.load.native.ccall import c_function, symbol_address

CV_MAT_MAGIC = 0x42420000
CV_MAT_CONT = 1 << 14
CV_8UC3 = 16  # CV_MAKETYPE(CV_8U, 3)
INTER_LINEAR, INTER_AREA = 1, 3
HEADER_WORDS = 10  # two CvMat headers of 40 bytes
AREA_FROM_FACTOR = 2.0

# void cvResize(...): declared int, as ffcv declares its void resize; the value is unused.
_call_cv_resize = c_function(types.int32, types.uintp, types.uintp, types.int32)


def cv_resize_address() -> int:
    """Address of ``cvResize`` in the OpenCV ffcv's library loaded (this process), or 0."""
    import ffcv.libffcv  # noqa: F401  (loads _libffcv and the OpenCV it links)

    path = None
    try:
        with open("/proc/self/maps") as maps:
            path = next((ln.split()[-1] for ln in maps if "libopencv_imgproc" in ln), None)
    except OSError:
        pass
    return symbol_address(path or ctypes.util.find_library("opencv_imgproc"), "cvResize")


@njit(nogil=True, cache=True)
def _header(words: np.ndarray, k: int, ptr: int, rows: int, cols: int, step: int) -> None:
    """CvMat ``k`` (0 or 1) of ``words``: a uint8 x 3 matrix at ``ptr``."""
    base = 5 * k
    words[base : base + 5] = 0
    ints = words.view(np.int32)
    flags = CV_MAT_MAGIC | CV_8UC3
    if step == cols * 3:
        flags |= CV_MAT_CONT
    ints[2 * base] = flags
    ints[2 * base + 1] = step
    words[base + 3] = ptr
    ints[2 * base + 8] = rows
    ints[2 * base + 9] = cols


@njit(nogil=True, cache=True)
def resize_view(
    address: int,
    source: np.ndarray,
    r0: int,
    r1: int,
    c0: int,
    c1: int,
    out: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """``source[r0:r1, c0:c1]`` (uint8 [h, w, 3], C order) resized into ``out`` [R, R, 3].

    ``address`` is :func:`cv_resize_address`; ``scratch`` is int64 [>= HEADER_WORDS].
    """
    row_bytes = source.shape[1] * 3
    _header(scratch, 0, source.ctypes.data + r0 * row_bytes + c0 * 3, r1 - r0, c1 - c0, row_bytes)
    _header(scratch, 1, out.ctypes.data, out.shape[0], out.shape[1], out.shape[1] * 3)
    factor = max((r1 - r0) / out.shape[0], (c1 - c0) / out.shape[1])
    method = INTER_AREA if factor >= AREA_FROM_FACTOR else INTER_LINEAR
    _call_cv_resize(address, scratch.ctypes.data, scratch.ctypes.data + 40, method)
