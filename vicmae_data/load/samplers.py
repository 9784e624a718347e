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
"""

from __future__ import annotations

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53

SAMPLING_MODES = {"distant": 0, "continuous": 1, "center": 2}


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
def sample_frames(mode: int, T: int, delta: int, n: int, out: np.ndarray, rng: np.ndarray) -> None:
    """Dispatch on ``mode`` (values of :data:`SAMPLING_MODES`)."""
    if mode == 0:
        distant(T, n, out, rng)
    elif mode == 1:
        continuous(T, delta, n, out, rng)
    else:
        center(T, n, out)
