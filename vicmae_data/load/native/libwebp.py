"""libwebp bindings callable from numba-compiled code (no GIL, no Python), cached on disk.

The ``*_fn`` functions take the table of libwebp's function addresses
(:func:`function_table`, read at run time) as their first argument and call through it
(:mod:`vicmae_data.load.native.ccall`), so numba caches them on disk and the loader's compiled
code starts in a second process without compiling them again. The plain functions are
conveniences for Python callers and tests (with the table of this process built in; they
are compiled per process). Only decoding is bound:

- :func:`get_info`: the width and height stored in a WebP bitstream;
- :func:`decode_rgb_into`: full decode into a caller's ``uint8[H, W, 3]`` buffer;
- :func:`decode_crop_into`: the advanced API (``WebPDecode`` with a ``WebPDecoderConfig``)
  decoding only a crop: ~10% faster than a full decode, then a crop (real 256x350 frames at
  q90, one core, each followed by OpenCV's resize to 224: ~1,690 against ~1,530 frames/s).

``WebPDecoderConfig`` is 240 bytes on 64-bit targets; we keep it in an ``int64[30]`` buffer
the caller owns (one per thread or per sample), and write the few fields we use at their
byte offsets from libwebp's ``decode.h`` (ABI 0x02xx, unchanged since libwebp 0.5).
libwebp snaps ``crop_left`` and ``crop_top`` down to even values for lossy frames, so
callers pass even offsets (the crop samplers in :mod:`vicmae_data.load.crops` only draw those).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from ctypes import c_int, c_size_t, c_void_p

import numpy as np
from numba import njit, types

from vicmae_data.load.native.ccall import address_of, c_function

# WEBP_DECODER_ABI_VERSION: libwebp accepts any minor version with the same major (0x02).
WEBP_DECODER_ABI_VERSION = 0x0209
CONFIG_WORDS = 30  # sizeof(WebPDecoderConfig) == 240 bytes == 30 int64 words
MODE_RGB = 0  # WEBP_CSP_MODE

# Byte offsets inside WebPDecoderConfig (input: 40 B, output WebPDecBuffer: 120 B, options).
_OUT = 40
_OFF_COLORSPACE = _OUT + 0
_OFF_IS_EXTERNAL = _OUT + 12
_OFF_RGBA_PTR = _OUT + 16
_OFF_RGBA_STRIDE = _OUT + 24
_OFF_RGBA_SIZE = _OUT + 32
_OPT = 160
_OFF_USE_CROPPING = _OPT + 8
_OFF_CROP_LEFT = _OPT + 12
_OFF_CROP_TOP = _OPT + 16
_OFF_CROP_WIDTH = _OPT + 20
_OFF_CROP_HEIGHT = _OPT + 24


def _find_libwebp() -> str:
    """The system libwebp, else the copy bundled in Pillow's wheel."""
    name = ctypes.util.find_library("webp")
    if name:
        return name
    try:
        import PIL

        site = os.path.dirname(os.path.dirname(PIL.__file__))
        bundled = sorted(glob.glob(os.path.join(site, "pillow.libs", "libwebp-*.so*")))
        if bundled:
            return bundled[0]
    except ImportError:
        pass
    raise OSError("libwebp not found: install libwebp7 (Debian/Ubuntu) or Pillow with WebP")


LIBWEBP_PATH = _find_libwebp()
_lib = ctypes.CDLL(LIBWEBP_PATH)

# int WebPGetInfo(const uint8_t* data, size_t size, int* width, int* height)
_get_info = _lib.WebPGetInfo
_get_info.argtypes = [c_void_p, c_size_t, c_void_p, c_void_p]
_get_info.restype = c_int

# uint8_t* WebPDecodeRGBInto(const uint8_t* data, size_t size, uint8_t* out, size_t out_size,
#                            int stride); the pointer comes back as an integer (0 = failure).
_decode_rgb_into = _lib.WebPDecodeRGBInto
_decode_rgb_into.argtypes = [c_void_p, c_size_t, c_void_p, c_size_t, c_int]
_decode_rgb_into.restype = c_size_t

# int WebPInitDecoderConfigInternal(WebPDecoderConfig*, int abi_version)
_init_config = _lib.WebPInitDecoderConfigInternal
_init_config.argtypes = [c_void_p, c_int]
_init_config.restype = c_int

# VP8StatusCode WebPDecode(const uint8_t* data, size_t size, WebPDecoderConfig* config)
_decode = _lib.WebPDecode
_decode.argtypes = [c_void_p, c_size_t, c_void_p]
_decode.restype = c_int


# Indices into the function table; the table itself is built per process (ASLR moves the
# library) and passed to cached code as an argument, never read from a global there.
FN_DECODE_RGB_INTO, FN_INIT_CONFIG, FN_DECODE = 0, 1, 2
_call_decode_rgb_into = c_function(
    types.uintp, types.uintp, types.uintp, types.uintp, types.uintp, types.int32
)
_call_init_config = c_function(types.int32, types.uintp, types.int32)
_call_decode = c_function(types.int32, types.uintp, types.uintp, types.uintp)


def function_table() -> np.ndarray:
    """int64 addresses of the libwebp functions the ``*_fn`` functions call (this process)."""
    return np.array(
        [address_of(f) for f in (_decode_rgb_into, _init_config, _decode)], dtype=np.int64
    )


_FUNCTIONS = function_table()  # for the per-process conveniences below only


@njit(nogil=True)
def get_info(data: np.ndarray, wh: np.ndarray) -> int:
    """Read the size of the WebP bitstream ``data`` (uint8[n]) into ``wh`` (int32[2]: w, h).

    Returns 1 on success, 0 if ``data`` is not a WebP image.
    """
    return _get_info(data.ctypes.data, data.size, wh.ctypes.data, wh.ctypes.data + 4)


@njit(nogil=True)
def decode_rgb_into(data: np.ndarray, out: np.ndarray, height: int, width: int) -> int:
    """Decode ``data`` into the first ``height * width * 3`` bytes of ``out`` (row stride W*3).

    Returns 1 on success, 0 on failure (corrupt data, or a frame of another size).
    """
    return decode_rgb_into_fn(_FUNCTIONS, data.ctypes.data, data.size, out, height, width)


@njit(nogil=True)
def decode_crop_into(
    data: np.ndarray,
    config: np.ndarray,
    out: np.ndarray,
    top: int,
    left: int,
    height: int,
    width: int,
) -> int:
    """Decode only the ``height x width`` window at (``top``, ``left``) into ``out``.

    ``config`` is an ``int64[30]`` scratch buffer (the ``WebPDecoderConfig``); ``out`` must
    hold ``height * width * 3`` bytes, written with row stride ``width * 3``. ``top`` and
    ``left`` should be even (libwebp snaps them down otherwise). Returns 1 on success.
    """
    return decode_crop_into_fn(
        _FUNCTIONS, data.ctypes.data, data.size, config, out, top, left, height, width
    )


@njit(nogil=True, cache=True)
def decode_rgb_into_fn(
    fns: np.ndarray, data_ptr: int, data_size: int, out: np.ndarray, height: int, width: int
) -> int:
    """:func:`decode_rgb_into` for WebP bytes given by address and size, through ``fns``.

    The loader's compiled code passes addresses, so that read-only and writable source
    arrays do not give numba two signatures to compile for every helper.
    """
    need = height * width * 3
    if out.size < need or height < 1 or width < 1:
        return 0
    ptr = _call_decode_rgb_into(
        fns[FN_DECODE_RGB_INTO], data_ptr, data_size, out.ctypes.data, need, width * 3
    )
    return 1 if ptr != 0 else 0


@njit(nogil=True, cache=True)
def decode_crop_into_fn(
    fns: np.ndarray,
    data_ptr: int,
    data_size: int,
    config: np.ndarray,
    out: np.ndarray,
    top: int,
    left: int,
    height: int,
    width: int,
) -> int:
    """:func:`decode_crop_into` for WebP bytes given by address and size, through ``fns``."""
    need = height * width * 3
    if out.size < need or config.size < CONFIG_WORDS or height < 1 or width < 1:
        return 0
    base = config.ctypes.data
    if _call_init_config(fns[FN_INIT_CONFIG], base, WEBP_DECODER_ABI_VERSION) == 0:
        return 0
    words = config.view(np.int32)  # the struct's int fields, 4 bytes each
    words[_OFF_COLORSPACE // 4] = MODE_RGB
    words[_OFF_IS_EXTERNAL // 4] = 1
    config[_OFF_RGBA_PTR // 8] = out.ctypes.data
    words[_OFF_RGBA_STRIDE // 4] = width * 3
    config[_OFF_RGBA_SIZE // 8] = need
    words[_OFF_USE_CROPPING // 4] = 1
    words[_OFF_CROP_LEFT // 4] = left
    words[_OFF_CROP_TOP // 4] = top
    words[_OFF_CROP_WIDTH // 4] = width
    words[_OFF_CROP_HEIGHT // 4] = height
    status = _call_decode(fns[FN_DECODE], data_ptr, data_size, base)
    return 1 if status == 0 else 0
