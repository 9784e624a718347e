"""Frame samplers and crop drawing: numba kernels against NumPy/Python references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vicmae_data.load.crops import (
    PLAN_ARGS,
    center_crop,
    draw_view_params,
    random_resized_crop,
    view_plan,
)
from vicmae_data.load.samplers import (
    ARG_DELTA,
    ARG_STRIDE,
    SAMPLERS,
    center,
    continuous,
    distant,
    rng_init,
    rng_int,
    rng_next,
    rng_uniform,
    splitmix64,
)

M64 = (1 << 64) - 1


# --- pure-Python references -----------------------------------------------------------


def ref_splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class RefRng:
    def __init__(self, seed: int, epoch: int, index: int) -> None:
        h = ref_splitmix64(seed)
        h = ref_splitmix64(h ^ epoch)
        self.state = ref_splitmix64(h ^ index)

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        return ref_splitmix64(self.state)

    def uniform(self) -> float:
        return (self.next() >> 11) * 2.0**-53

    def integer(self, n: int) -> int:
        return min(int(self.uniform() * n), n - 1)


def ref_distant(T: int, n: int, rng: RefRng) -> list[int]:
    out = []
    for k in range(n):
        lo, hi = k * T // n, (k + 1) * T // n
        hi = max(hi, lo + 1)
        out.append(lo + rng.integer(hi - lo))
    return out


def ref_continuous(T: int, delta: int, n: int, rng: RefRng) -> list[int]:
    cur = rng.integer(T)
    out = [cur]
    for _ in range(1, n):
        if delta > 0:
            cur = min(cur + 1 + rng.integer(delta), T - 1)
        out.append(cur)
    return out


def state(seed: int, epoch: int = 0, index: int = 0) -> np.ndarray:
    s = np.zeros(1, dtype=np.uint64)
    rng_init(seed, epoch, index, s)
    return s


# --- RNG ------------------------------------------------------------------------------


def test_rng_matches_reference_stream() -> None:
    for x in (0, 1, 12345, M64):
        assert int(splitmix64(np.uint64(x))) == ref_splitmix64(x)
    s, ref = state(7, 3, 11), RefRng(7, 3, 11)
    assert int(s[0]) == ref.state
    for _ in range(50):
        assert int(rng_next(s)) == ref.next()
    assert rng_uniform(s) == ref.uniform()
    assert rng_int(s, 17) == ref.integer(17)


def test_rng_keys_give_different_streams() -> None:
    firsts = {int(rng_next(state(0, e, i))) for e in range(5) for i in range(200)}
    assert len(firsts) == 1000
    u = np.array([rng_uniform(state(3, 0, i)) for i in range(4000)])
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.02  # 4000 draws: sd of the mean ~0.0046


# --- samplers -------------------------------------------------------------------------


@pytest.mark.parametrize("T,n", [(1, 2), (3, 4), (2, 2), (10, 2), (97, 3), (300, 2)])
def test_distant_matches_reference_and_segments(T: int, n: int) -> None:
    seen = [set() for _ in range(n)]
    for i in range(300):
        out = np.zeros(n, dtype=np.int64)
        distant(T, n, out, state(1, 0, i))
        assert out.tolist() == ref_distant(T, n, RefRng(1, 0, i))
        for k in range(n):
            lo, hi = k * T // n, (k + 1) * T // n
            if hi > lo:
                assert lo <= out[k] < hi  # one frame from each equal segment
            else:
                assert out[k] == lo  # T < n: deterministic spread
            seen[k].add(int(out[k]))
    for k in range(n):  # every frame of a (small) segment gets drawn
        lo, hi = k * T // n, max((k + 1) * T // n, k * T // n + 1)
        if hi - lo <= 10:
            assert seen[k] == set(range(lo, hi))


def test_distant_few_frames_is_deterministic_spread() -> None:
    out = np.zeros(4, dtype=np.int64)
    distant(1, 4, out, state(0))
    assert out.tolist() == [0, 0, 0, 0]
    distant(3, 4, out, state(0))
    assert out.tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize("T,delta,n", [(50, 8, 2), (10, 3, 4), (5, 20, 2), (1, 8, 2), (30, 0, 3)])
def test_continuous_matches_reference_and_bounds(T: int, delta: int, n: int) -> None:
    gaps = set()
    for i in range(300):
        out = np.zeros(n, dtype=np.int64)
        continuous(T, delta, n, out, state(2, 1, i))
        assert out.tolist() == ref_continuous(T, delta, n, RefRng(2, 1, i))
        assert 0 <= out[0] < T
        for k in range(1, n):
            gap = out[k] - out[k - 1]
            if delta == 0 or T == 1:
                assert gap == 0
            elif out[k] < T - 1:
                assert 1 <= gap <= delta  # next frame in (prev, prev + delta]
                gaps.add(int(gap))
            else:
                assert 0 <= gap <= delta  # clamped at the last frame
    if delta > 0 and T > 2 * delta:
        assert gaps == set(range(1, delta + 1))


def test_center_frames() -> None:
    out = np.zeros(3, dtype=np.int64)
    center(9, 1, out)
    assert out[0] == 4
    center(9, 3, out)
    assert out.tolist() == [1, 4, 7]
    center(1, 3, out)
    assert out.tolist() == [0, 0, 0]


# --- crops ----------------------------------------------------------------------------


def ref_crop(H, W, scale, ratio, rng: RefRng) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, fallback included, with an even origin."""
    area = H * W
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * rng.uniform())
        aspect = math.exp(lo + (hi - lo) * rng.uniform())
        w = int(math.sqrt(target * aspect) + 0.5)
        h = int(math.sqrt(target / aspect) + 0.5)
        if 0 < w <= W and 0 < h <= H:
            top, left = rng.integer(H - h + 1), rng.integer(W - w + 1)
            return top - top % 2, left - left % 2, h, w
    if W / H < ratio[0]:  # fallback: the whole image, or its centre at the nearest ratio
        w, h = W, max(1, min(H, int(W / ratio[0] + 0.5)))
    elif W / H > ratio[1]:
        h, w = H, max(1, min(W, int(H * ratio[1] + 0.5)))
    else:
        h, w = H, W
    top, left = (H - h) // 2, (W - w) // 2
    return top - top % 2, left - left % 2, h, w


def test_random_resized_crop_matches_reference() -> None:
    areas = []
    for i in range(300):
        box = np.zeros(4, dtype=np.int64)
        random_resized_crop(256, 340, 0.5, 1.0, 3 / 4, 4 / 3, state(4, 0, i), box)
        top, left, h, w = box.tolist()
        assert (top, left, h, w) == ref_crop(256, 340, (0.5, 1.0), (3 / 4, 4 / 3), RefRng(4, 0, i))
        assert top % 2 == 0 and left % 2 == 0  # libwebp's crop origin is even
        assert 0 <= top and top + h <= 256 and 0 <= left and left + w <= 340
        areas.append(h * w / (256 * 340))
    assert 0.45 < min(areas) and max(areas) <= 1.0


def test_center_crop() -> None:
    box = np.zeros(4, dtype=np.int64)
    center_crop(256, 340, 224 / 256, box)
    assert box.tolist() == [16, 58, 224, 224]


def test_draw_view_params_train_and_eval() -> None:
    settings = np.array([0.5, 1.0, 0.2, 1.0, 3 / 4, 4 / 3, 224 / 256])
    params = np.zeros((2, 6), dtype=np.int32)
    rng = np.zeros(1, dtype=np.uint64)
    train, evaluation = view_plan("distant", train=True), view_plan("distant", train=False)
    draw_view_params(0, 0, 5, 100, 64, 80, train, settings, params, rng)
    again = np.zeros_like(params)
    draw_view_params(0, 0, 5, 100, 64, 80, train, settings, again, rng)
    assert (params == again).all()  # a pure function of (seed, epoch, index)
    assert params[0, 0] < 50 <= params[1, 0]
    other = np.zeros_like(params)
    draw_view_params(0, 1, 5, 100, 64, 80, train, settings, other, rng)
    assert not (params == other).all()  # the epoch changes the draws
    draw_view_params(0, 0, 5, 100, 64, 80, evaluation, settings, params, rng)
    assert params[:, 0].tolist() == [25, 75]
    assert (params[:, 5] == 0).all() and params[0, 1:5].tolist() == [4, 12, 56, 56]


# --- edges the mutation run found unguarded (scripts/mutate.py) ------------------------


@pytest.mark.parametrize(
    "H,W,scale,ratio",
    [
        (10, 100, (0.9, 1.0), (3 / 4, 4 / 3)),  # too wide for the ratio: centre, full height
        (100, 10, (0.9, 1.0), (3 / 4, 4 / 3)),  # too tall: centre, full width
        (30, 34, (1.5, 2.0), (3 / 4, 4 / 3)),  # more than the image: the whole image
        (10, 10, (0.01, 0.01), (0.01, 0.01)),  # width rounds to 0: refused, 1 at least
        (10, 10, (0.01, 0.01), (100.0, 100.0)),  # height rounds to 0: refused, 1 at least
        (12, 12, (1.0, 1.0), (1.0, 1.0)),  # exactly the image: taken at the first draw
        (10, 10, (0.01, 0.01), (1.0, 1.0)),  # a 1 x 1 crop: the smallest there is, taken
        (31, 47, (0.08, 1.0), (3 / 4, 4 / 3)),  # odd sizes
    ],
)
def test_random_resized_crop_fallbacks_match_reference(H, W, scale, ratio) -> None:
    for i in range(20):
        box, rng, ref = np.zeros(4, dtype=np.int64), state(5, 0, i), RefRng(5, 0, i)
        random_resized_crop(H, W, *scale, *ratio, rng, box)
        assert tuple(box.tolist()) == ref_crop(H, W, scale, ratio, ref), i
        assert int(rng[0]) == ref.state  # as many draws as the reference (10 tries at most)


def test_center_crop_even_origin_and_smallest_side() -> None:
    box = np.zeros(4, dtype=np.int64)
    center_crop(230, 238, 224 / 230, box)  # offsets 3 and 7 -> 2 and 6
    assert box.tolist() == [2, 6, 224, 224]
    center_crop(4, 4, 0.01, box)  # never an empty crop
    assert box.tolist() == [0, 0, 1, 1]


def test_samplers_are_dispatched_by_name() -> None:
    """view_plan(name) makes the kernels call that sampler: the frames drawn first from the
    sample's stream are the named reference's."""
    settings = np.array([0.5, 1.0, 0.5, 1.0, 3 / 4, 4 / 3, 0.875])
    for name, fill in (("distant", lambda r: ref_distant(40, 3, r)),
                       ("continuous", lambda r: ref_continuous(40, 4, 3, r)),
                       ("center", lambda r: [6, 20, 33])):  # fmt: skip
        params = np.zeros((3, 6), dtype=np.int32)
        plan = view_plan(name, train=True, delta=4)
        draw_view_params(6, 0, 1, 40, 64, 80, plan, settings, params, np.zeros(1, np.uint64))
        assert params[:, 0].tolist() == fill(RefRng(6, 0, 1)), name
    assert {"distant", "continuous", "center", "clip"} <= set(SAMPLERS)


def test_loader_defaults_are_the_configs() -> None:
    """view_plan's and make_loader's sampling defaults are the config's (Table 3's, mae_st's): a
    library user and a `vicmae train` user draw the same frames."""
    import inspect

    from vicmae.config.sections import EvalDataConfig, LoaderConfig
    from vicmae_data import make_loader

    plan = view_plan("clip", train=True)
    assert plan[PLAN_ARGS + ARG_DELTA] == LoaderConfig.delta
    assert plan[PLAN_ARGS + ARG_STRIDE] == EvalDataConfig.clip_stride  # mae_st's 4
    defaults = inspect.signature(make_loader).parameters
    assert defaults["delta"].default == LoaderConfig.delta
    assert defaults["sampling"].default == LoaderConfig.sampling
    assert defaults["clip_stride"].default == EvalDataConfig.clip_stride


@pytest.mark.parametrize("delta", [0, 1])
def test_continuous_small_delta_draws_as_the_reference(delta: int) -> None:
    for i in range(20):
        out, rng, ref = np.zeros(4, dtype=np.int64), state(2, 0, i), RefRng(2, 0, i)
        continuous(30, delta, 4, out, rng)
        assert out.tolist() == ref_continuous(30, delta, 4, ref)
        assert int(rng[0]) == ref.state  # delta 0: one draw, the start; no more


def ref_view_params(seed, epoch, index, T, H, W, mode, delta, train, settings, V):
    """draw_view_params in Python: frames, then per view a crop (and a flip when training)."""
    rng = RefRng(seed, epoch, index)
    if not train or mode == 2:
        frames = [min((2 * k + 1) * T // (2 * V), T - 1) for k in range(V)]
    elif mode == 0:
        frames = ref_distant(T, V, rng)
    else:
        frames = ref_continuous(T, delta, V, rng)
    scale = (settings[2], settings[3]) if T == 1 else (settings[0], settings[1])
    rows = []
    for v in range(V):
        if train:
            box = ref_crop(H, W, scale, (settings[4], settings[5]), rng)
            flip = 1 if rng.uniform() < 0.5 else 0
        else:
            side = max(1, min(H, W, int(min(H, W) * settings[6] + 0.5)))
            top, left = (H - side) // 2, (W - side) // 2
            box, flip = (top - top % 2, left - left % 2, side, side), 0
        rows.append([frames[v], *box, flip])
    return rows


@pytest.mark.parametrize("T", [1, 100])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("mode", [0, 1])
def test_draw_view_params_matches_reference(T: int, train: bool, mode: int) -> None:
    plan = view_plan(("distant", "continuous")[mode], train=train, delta=5)
    # Video scale and image scale far apart, so that using the wrong one shows.
    settings = np.array([0.9, 1.0, 0.05, 0.1, 1 / 2, 2.0, 0.5])
    flips = set()
    for i in range(40):
        params = np.zeros((2, 6), dtype=np.int32)
        draw_view_params(3, 1, i, T, 60, 90, plan, settings, params, np.zeros(1, np.uint64))
        ref = ref_view_params(3, 1, i, T, 60, 90, mode, 5, train, settings, 2)
        assert params.tolist() == ref, i
        flips |= set(params[:, 5].tolist())
    assert flips == ({0, 1} if train else {0})
