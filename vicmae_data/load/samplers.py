"""Frame samplers (paper section 5.4) and the counter-based RNG they draw from, in numba.

Every function is a plain ``@njit`` function, callable from Python and from the loader's
compiled pipeline. Randomness comes from an explicit state (``uint64[1]``) seeded from
(seed, epoch, sample index) with :func:`rng_init`, so a sample's frames, crops and flips
depend only on those three numbers: never on thread scheduling, worker count or batch
composition. (numba's ``np.random`` has one state per thread inside ``prange``: the same
seed would give different draws depending on which thread ran a sample.)

Samplers write ``n`` frame indices into ``out`` (int32 or int64, length >= n):

- :func:`distant`: split ``[0, T)`` into ``n`` equal segments ``[floor(kT/n), floor((k+1)T/n))``
  and draw one frame uniformly from each. When ``T < n`` a segment can be empty; it then
  becomes the single frame ``floor(kT/n)``, so views spread over the frames there are and
  repeat deterministically (T = 1: every view gets frame 0).
- :func:`continuous`: start ``i`` uniform in ``[0, T)``, each next frame uniform in
  ``(prev, prev + delta]``, clamped to ``T - 1`` (near the end of a clip the views may
  repeat the last frame); ``delta = 0`` gives the same frame for every view.
- :func:`center`: deterministic, the middle frame of each of the ``n`` segments (``n = 1``:
  the middle frame of the clip); for evaluation.
- :func:`clip`: ``n`` frames spread over a window of ``n * stride`` stored frames (a 16 x 4
  clip), at a random start for training or at the start of temporal view ``k`` of ``K``
  for testing, the rules of ST-MAE's loader (see its docstring).
- :func:`segment`: one frame from each of ``n`` equal segments of the whole video (TSN's
  segment-based sampling, as VideoMAE samples Something-Something v2), at a random place in
  each segment for training or at offset ``k / K`` of each segment for test view ``k``.

The loader finds a sampler by name in :data:`SAMPLERS` (a :class:`Sampler` per entry). Each
entry's compiled code is reached through a C entry point of one signature whose address the
decoder passes to its cached kernels at run time (as the libwebp functions are, see
:mod:`vicmae_data.load.native.ccall`): a new sampler is one entry here, and the kernels are never
compiled per sampler, per process or per seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import carray, njit, types

from vicmae_data.load.native.ccall import c_entry

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True)
def splitmix64(x: np.uint64) -> np.uint64:
    """The splitmix64 finaliser: a bijective 64-bit mix (Steele et al. 2014)."""
    z = np.uint64(x) + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True)
def rng_init(seed: int, epoch: int, index: int, state: np.ndarray) -> None:
    """Seed ``state`` (uint64[1]) from (seed, epoch, sample index); distinct keys -> streams."""
    h = splitmix64(np.uint64(seed))
    h = splitmix64(h ^ np.uint64(epoch))
    h = splitmix64(h ^ np.uint64(index))
    state[0] = h


@njit(cache=True)
def rng_next(state: np.ndarray) -> np.uint64:
    """Next 64 random bits (splitmix64 sequence: the state advances by the golden gamma)."""
    state[0] = state[0] + _GOLDEN
    return splitmix64(state[0])


@njit(cache=True)
def rng_uniform(state: np.ndarray) -> float:
    """Uniform float64 in [0, 1)."""
    return float(rng_next(state) >> _S11) * _INV53


@njit(cache=True)
def rng_int(state: np.ndarray, n: int) -> int:
    """Uniform integer in [0, n) for n >= 1 (float method; bias < 2**-40 for n < 2**13)."""
    k = int(rng_uniform(state) * n)
    return min(k, n - 1)


@njit(cache=True)
def distant(T: int, n: int, out: np.ndarray, rng: np.ndarray) -> None:
    """One uniform frame from each of ``n`` equal segments of ``[0, T)`` (see module doc)."""
    for k in range(n):
        lo = (k * T) // n
        hi = ((k + 1) * T) // n
        if hi <= lo:
            hi = lo + 1
        out[k] = lo + rng_int(rng, hi - lo)


@njit(cache=True)
def continuous(T: int, delta: int, n: int, out: np.ndarray, rng: np.ndarray) -> None:
    """Start uniform in ``[0, T)``, each next frame uniform in ``(prev, prev + delta]``, clamped."""
    cur = rng_int(rng, T)
    out[0] = cur
    for k in range(1, n):
        if delta > 0:
            cur = min(cur + 1 + rng_int(rng, delta), T - 1)
        out[k] = cur


@njit(cache=True)
def center(T: int, n: int, out: np.ndarray) -> None:
    """The middle frame of each of ``n`` equal segments (deterministic)."""
    for k in range(n):
        out[k] = min(((2 * k + 1) * T) // (2 * n), T - 1)


@njit(cache=True)
def clip(T: int, n: int, stride: int, k: int, K: int, out: np.ndarray, rng: np.ndarray) -> None:
    """``n`` frames over a window of ``n * stride`` stored frames, as ST-MAE samples a clip.

    facebookresearch/mae_st ``util/decoder/decoder.py``: ``get_start_end_idx`` places the
    window (``delta = max(T - n * stride, 0)``; ``k < 0``: start uniform in ``[0, delta]``,
    its ``clip_idx == -1``; else with ``use_offset`` (``util/kinetics.py`` default): ``K == 1``
    the centre, ``floor(delta / 2)``, and otherwise ``k * floor(delta / (K - 1))``, so the
    first view starts at frame 0 and the last ends near the last frame), and
    ``temporal_sampling`` takes ``linspace(start, start + n * stride - 1, n)``, truncated to
    integers and clamped to ``[0, T - 1]``: frames ~``stride`` apart (exactly
    ``(n * stride - 1) / (n - 1)``), and a video shorter than the window repeats its last
    frame. Computed here in float64, where torch's ``linspace`` works in float32.
    """
    size = n * stride
    delta = max(T - size, 0)
    if k < 0:
        start = rng_uniform(rng) * delta
    elif K == 1:
        start = float(delta // 2)
    else:
        start = float(k * (delta // (K - 1)))
    for i in range(n):
        x = start + (i * (size - 1)) / (n - 1) if n > 1 else start
        out[i] = min(max(int(x), 0), T - 1)  # x >= 0: int() truncates, as .long()


@njit(cache=True)
def segment(T: int, n: int, k: int, K: int, out: np.ndarray, rng: np.ndarray) -> None:
    """One frame from each of ``n`` equal segments of ``[0, T)``, as VideoMAE samples SSv2.

    MCG-NJU/VideoMAE ``ssv2.py`` ``loadvideo_decord`` (``num_segment`` = the clip's 16
    frames, ``clip_len`` 1). Training (``k < 0``): segments of ``T // n`` frames, frame
    ``i * (T // n) + randint(T // n)`` (the last ``T % n`` frames are never drawn, as
    there); a video shorter than ``n`` frames, where VideoMAE takes frame 0 ``n`` times,
    gets :func:`distant`'s segments instead. Test view ``k`` of ``K``: frame
    ``floor(T * (K * i + k) / (K * n))`` of segment ``i``: for VideoMAE's ``K = 2`` the
    segment starts ``int(tick * i)`` (view 0) and centres ``int(tick / 2 + tick * i)``
    (view 1), ``tick = T / n``; other ``K`` spread the views evenly through each segment
    the same way (VideoMAE's ``temporal_start::2`` supports only 2).
    """
    if k >= 0:
        for i in range(n):
            out[i] = min((T * (K * i + k)) // (K * n), T - 1)
        return
    seg = T // n
    if seg == 0:
        distant(T, n, out, rng)
        return
    for i in range(n):
        out[i] = i * seg + rng_int(rng, seg)


# --- the registry ----------------------------------------------------------------------

# Every sampler's C entry point: (T, n, args, out, rng) -> 0, where ``args`` is int64[4]
# (delta, stride, k, K: each sampler reads what it needs), ``out`` int64[n] and ``rng`` the
# uint64[1] state. Pointers arrive as integers (numba's ``array.ctypes.data``).
ENTRY_SIGNATURE = types.int32(
    types.int64,
    types.int64,
    types.CPointer(types.int64),
    types.CPointer(types.int64),
    types.CPointer(types.uint64),
)
ARG_DELTA, ARG_STRIDE, ARG_INDEX, ARG_COUNT = range(4)
NUM_ARGS = 4


@c_entry(ENTRY_SIGNATURE)
def _distant_entry(T, n, args, out, rng):
    distant(T, n, carray(out, n), carray(rng, 1))
    return 0


@c_entry(ENTRY_SIGNATURE)
def _continuous_entry(T, n, args, out, rng):
    continuous(T, carray(args, NUM_ARGS)[ARG_DELTA], n, carray(out, n), carray(rng, 1))
    return 0


@c_entry(ENTRY_SIGNATURE)
def _center_entry(T, n, args, out, rng):
    center(T, n, carray(out, n))
    return 0


@c_entry(ENTRY_SIGNATURE)
def _clip_entry(T, n, args, out, rng):
    a = carray(args, NUM_ARGS)
    clip(T, n, a[ARG_STRIDE], a[ARG_INDEX], a[ARG_COUNT], carray(out, n), carray(rng, 1))
    return 0


@c_entry(ENTRY_SIGNATURE)
def _segment_entry(T, n, args, out, rng):
    a = carray(args, NUM_ARGS)
    segment(T, n, a[ARG_INDEX], a[ARG_COUNT], carray(out, n), carray(rng, 1))
    return 0


@dataclass(frozen=True)
class Sampler:
    """One entry of :data:`SAMPLERS`.

    Attributes:
        name: what ``make_loader(sampling=...)`` takes.
        entry: the compiled C entry point (:data:`ENTRY_SIGNATURE`).
        evaluation: the entry used with ``train=False`` (deterministic frames).
        clip: the views are one clip's frames, all with one crop and flip (``num_views`` is
            the clip length); otherwise every view draws its own crop and flip.
        summary: one line for error messages and docs.
    """

    name: str
    entry: object
    evaluation: str
    clip: bool
    summary: str

    @property
    def address(self) -> int:
        """The entry point's address in this process (what the kernels call)."""
        return int(self.entry.address)


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("distant", _distant_entry, "center", False, "one frame from each of n segments"),
        Sampler("continuous", _continuous_entry, "center", False, "frames within delta"),
        Sampler("center", _center_entry, "center", False, "the middle frame of each segment"),
        Sampler("clip", _clip_entry, "clip", True, "T frames at stride s, one crop"),
        Sampler("segment", _segment_entry, "segment", True, "a frame from each of T segments"),
    )
}
