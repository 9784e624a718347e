"""Clip loading: the clip sampler and test views against ST-MAE's rules, then a real file.

References (facebookresearch/mae_st, which follows SlowFast): ``util/decoder/decoder.py``
``get_start_end_idx`` and ``temporal_sampling`` (where a clip lies, which frames it takes),
``util/decoder/transform.py`` ``uniform_crop`` and ``_get_param_spatial_crop`` (the test
crops, the training crop), ``util/kinetics.py`` (``use_offset_sampling=True``). They are
restated here in plain Python, and the loader must agree with them.

The end-to-end test encodes real videos with PyAV whose every frame carries its index in
its colour (red and green, uniform over the frame) and a fixed gradient in blue (a plane
over x and y): from a decoded view the test reads back which frame it came from, and from
the blue plane where it was cropped and whether it was flipped.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from media import sample_params
from test_samplers import RefRng

from vicmae_data import make_loader, to_model_input
from vicmae_data.format.beton import Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.inspect.read import decode_frames
from vicmae_data.load.crops import draw_view_params, uniform_crop, view_plan
from vicmae_data.load.loader import CLIP_RATIO, CLIP_VIDEO_SCALE
from vicmae_data.load.samplers import clip, rng_init
from vicmae_data.write.beton_writer import write_beton

# --- pure-Python references ------------------------------------------------------------


def ref_clip(T: int, n: int, stride: int, k: int, K: int, rng: RefRng | None) -> list[int]:
    """get_start_end_idx (use_offset=True; clip_idx -1: random) + temporal_sampling."""
    size = n * stride
    delta = max(T - size, 0)
    if k == -1:
        start = rng.uniform() * delta  # random.uniform(0, delta)
    elif K == 1:
        start = math.floor(delta / 2)
    else:
        start = k * math.floor(delta / (K - 1))
    end = start + size - 1
    picks = [start + i * (end - start) / (n - 1) for i in range(n)] if n > 1 else [start]
    return [min(max(int(x), 0), T - 1) for x in picks]  # .long() after clamp(0, T - 1)


def ref_uniform_crop(H: int, W: int, side: int, j: int) -> tuple[int, int, int, int]:
    """uniform_crop's placement (0, 1, 2: start, centre, end of the long side)."""
    y, x = math.ceil((H - side) / 2), math.ceil((W - side) / 2)
    if H > W:
        y = {0: 0, 1: y, 2: H - side}[j]
    else:
        x = {0: 0, 1: x, 2: W - side}[j]
    return y, x, side, side


def ref_random_box(H, W, scale, ratio, rng: RefRng) -> tuple[int, int, int, int]:
    """_get_param_spatial_crop (log-scale ratio, 10 tries, else the centre)."""
    for _ in range(10):
        target = H * W * (scale[0] + (scale[1] - scale[0]) * rng.uniform())
        lo, hi = math.log(ratio[0]), math.log(ratio[1])
        aspect = math.exp(lo + (hi - lo) * rng.uniform())
        w, h = int(math.sqrt(target * aspect) + 0.5), int(math.sqrt(target / aspect) + 0.5)
        if 0 < w <= W and 0 < h <= H:
            return rng.integer(H - h + 1), rng.integer(W - w + 1), h, w
    raise AssertionError("the fallback is not expected at these sizes")


def ref_clip_params(seed, epoch, index, T, H, W, n, stride, test_view=None) -> np.ndarray:
    """Rows (frame, top, left, height, width, flip) the loader must draw for one clip."""
    rng = RefRng(seed, epoch, index)
    if test_view is None:
        frames = ref_clip(T, n, stride, -1, 1, rng)
        box = ref_random_box(H, W, CLIP_VIDEO_SCALE, CLIP_RATIO, rng)
        flip = int(rng.uniform() < 0.5)  # horizontal_flip(0.5, frames): one draw per clip
    else:
        k, K, j, J = test_view
        frames = ref_clip(T, n, stride, k, K, None)
        side = min(H, W) if J == 3 else round(min(H, W) * 224 / 256)
        box = ref_uniform_crop(H, W, side, j if J == 3 else 1)
        flip = 0
    return np.array([[f, *box, flip] for f in frames], dtype=np.int32)


# --- the sampler and the crops ---------------------------------------------------------

SHAPES = [(16, 4), (8, 8), (16, 2), (4, 1), (2, 3), (1, 4)]


@pytest.mark.parametrize("T", [1, 5, 31, 63, 64, 65, 100, 300])
@pytest.mark.parametrize("n,stride", SHAPES)
def test_clip_frames_match_reference_and_source(T: int, n: int, stride: int) -> None:
    out = np.zeros(n, dtype=np.int64)
    for i in range(50):  # training: a random window
        state = np.zeros(1, dtype=np.uint64)
        rng_init(3, 1, i, state)
        clip(T, n, stride, -1, 1, out, state)
        assert out.tolist() == ref_clip(T, n, stride, -1, 1, RefRng(3, 1, i))
        assert 0 <= out[0] <= max(T - n * stride, 0) and (np.diff(out) >= 0).all()
        if n > 1 and T >= n * stride:  # the window fits: n frames spread over n * stride
            assert set(np.diff(out).tolist()) <= {
                (n * stride - 1) // (n - 1),
                -(-(n * stride - 1) // (n - 1)),
            }
    if T < n * stride:  # shorter than the window: from frame 0, the last frame repeats
        clip(T, n, stride, -1, 1, out, np.zeros(1, dtype=np.uint64))
        assert out[0] == 0 and out[-1] == T - 1
    delta = max(T - n * stride, 0)
    for K in (1, 2, 3, 7, 10):  # testing: K evenly spaced windows
        starts = []
        for k in range(K):
            clip(T, n, stride, k, K, out, np.zeros(1, dtype=np.uint64))
            assert out.tolist() == ref_clip(T, n, stride, k, K, None)
            # and what the source computes in float32: torch.linspace, then .long()
            start = delta // 2 if K == 1 else k * (delta // (K - 1))
            source = torch.linspace(start, start + n * stride - 1, n).clamp(0, T - 1).long()
            assert out.tolist() == source.tolist()
            starts.append(start)
        if K > 1:
            assert starts[0] == 0 and starts[-1] == (K - 1) * (delta // (K - 1))
            assert len(set(np.diff(starts).tolist())) <= 1  # evenly spaced
        else:
            assert starts == [delta // 2]


@pytest.mark.parametrize("H,W", [(256, 340), (340, 256), (256, 256), (48, 64), (31, 56), (57, 40)])
def test_three_spatial_views_cover_the_long_side(H: int, W: int) -> None:
    side = min(H, W)
    covered = np.zeros(max(H, W), dtype=bool)
    box = np.zeros(4, dtype=np.int64)
    for j in range(3):
        uniform_crop(H, W, side, j, box)
        assert tuple(box.tolist()) == ref_uniform_crop(H, W, side, j)
        top, left, h, w = box.tolist()
        assert h == w == side and 0 <= top <= H - h and 0 <= left <= W - w
        lo = top if H > W else left
        covered[lo : lo + side] = True
        L = max(H, W)
        assert lo == [0, math.ceil((L - side) / 2), L - side][j]  # start, centre, end
    assert covered.all()


@pytest.mark.parametrize("H,W,fraction,side", [
    (256, 340, 224 / 256, 224), (340, 256, 224 / 256, 224),  # mae_st's 224 of 256
    (1, 8, 224 / 256, 1), (2, 3, 0.2, 1),  # never empty: at least one pixel
])  # fmt: skip
def test_one_spatial_view_is_a_centred_crop_never_empty(H, W, fraction, side) -> None:
    settings = np.array([*CLIP_VIDEO_SCALE, 0.2, 1.0, *CLIP_RATIO, fraction])
    plan = view_plan("clip", train=False, clip_stride=1, test_view=(0, 1, 0, 1))
    params = np.zeros((2, 6), dtype=np.int32)
    draw_view_params(0, 0, 0, 4, H, W, plan, settings, params, np.zeros(1, np.uint64))
    for row in params:
        assert tuple(row[1:5].tolist()) == ref_uniform_crop(H, W, side, 1)


def test_clip_params_one_crop_and_flip_for_every_frame() -> None:
    settings = np.array([*CLIP_VIDEO_SCALE, 0.2, 1.0, *CLIP_RATIO, 224 / 256])
    rng = np.zeros(1, dtype=np.uint64)
    train = view_plan("clip", train=True, clip_stride=4)
    flips, boxes = set(), set()
    for index in range(200):
        params = np.zeros((16, 6), dtype=np.int32)
        draw_view_params(7, 2, index, 300, 256, 340, train, settings, params, rng)
        np.testing.assert_array_equal(params, ref_clip_params(7, 2, index, 300, 256, 340, 16, 4))
        assert (params[:, 1:] == params[0, 1:]).all()  # one crop and flip for the clip
        flips.add(int(params[0, 5]))
        boxes.add(tuple(params[0, 1:5].tolist()))
    assert flips == {0, 1} and len(boxes) > 190
    for view in [(0, 7, 0, 3), (3, 7, 1, 3), (6, 7, 2, 3), (0, 1, 0, 1), (1, 2, 0, 1)]:
        plan = view_plan("clip", train=False, clip_stride=4, test_view=view)
        params = np.zeros((16, 6), dtype=np.int32)
        draw_view_params(7, 2, 5, 300, 256, 340, plan, settings, params, rng)
        np.testing.assert_array_equal(
            params, ref_clip_params(7, 2, 5, 300, 256, 340, 16, 4, test_view=view)
        )


def test_bad_clip_arguments() -> None:
    with pytest.raises(ValueError, match="needs sampling='clip' and train=False"):
        view_plan("clip", train=True, test_view=(0, 1, 0, 3))
    with pytest.raises(ValueError, match="needs sampling='clip'"):
        view_plan("distant", train=False, test_view=(0, 1, 0, 3))
    for bad in [(3, 3, 0, 3), (0, 3, 0, 2), (0, 0, 0, 1), (-1, 3, 0, 3), (0, 3, -1, 3)]:
        with pytest.raises(ValueError, match="test_view must be"):
            view_plan("clip", train=False, test_view=bad)
    for delta, stride in [(-1, 4), (8, 0)]:  # each bound on its own
        with pytest.raises(ValueError, match="delta must be >= 0 and clip_stride >= 1"):
            view_plan("clip", train=True, delta=delta, clip_stride=stride)
    view_plan("clip", train=True, delta=0, clip_stride=1)  # the smallest valid values
    with pytest.raises(ValueError, match="sampling must be one of"):
        view_plan("clips", train=True)


# --- a real file ------------------------------------------------------------------------

N, STRIDE, RES = 8, 4, 32  # a window of 32 stored frames
LENGTHS = (50, 20, 32, 41)  # longer than the window, shorter, exactly it, longer
SRC_H, SRC_W = 72, 96  # stored at short side 48: 48 x 64


def coded_frames(T: int) -> np.ndarray:
    """Frame t: red and green say t (steps of 10), blue is a plane over x and y."""
    y, x = np.mgrid[0:SRC_H, 0:SRC_W]
    blue = 30 + 120 * x / (SRC_W - 1) + 80 * y / (SRC_H - 1)
    frames = np.empty((T, SRC_H, SRC_W, 3), dtype=np.uint8)
    for t in range(T):
        frames[t, ..., 0] = 20 + 10 * (t % 20)
        frames[t, ..., 1] = 20 + 10 * (t // 20)
        frames[t, ..., 2] = np.round(blue)
    return frames


def frame_index(view: np.ndarray) -> int:
    """The frame a decoded view (3, R, R) came from, from its red and green."""
    red, green = np.median(view[0]), np.median(view[1])
    return round(float(red - 20) / 10) + 20 * round(float(green - 20) / 10)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[np.ndarray]]:
    """A .beton of PyAV-encoded videos, converted by the project's transcoder; and the
    stored frames as pixels (Pillow's decode), the reference the views are checked on."""
    from vicmae_data.synth.media import write_video
    from vicmae_data.write.settings import TranscodeSettings
    from vicmae_data.write.transcode import transcode

    d = tmp_path_factory.mktemp("clips")
    samples, stored = [], []
    for i, T in enumerate(LENGTHS):
        video = write_video(d / f"v{i}.mp4", coded_frames(T), options={"crf": "12"})
        done = transcode(video, TranscodeSettings(short_side=48, quality=90))
        assert len(done.frames) == T and (done.height, done.width) == (48, 64)
        samples.append(Sample(FrameList(done.frames, done.height, done.width), i, {}))
        stored.append(decode_frames(done.frames))
    path = d / "clips.beton"
    write_beton(path, samples)
    for frames in stored:  # the colour code survived both encodings
        assert [frame_index(f.transpose(2, 0, 1)) for f in frames] == list(range(len(frames)))
    return str(path), stored


def reference_views(frames: np.ndarray, params: np.ndarray) -> np.ndarray:
    """The views (V, 3, R, R) params ask for, cut from the stored frames with OpenCV."""
    views = []
    for f, top, left, h, w, flip in params.tolist():
        crop = frames[f][top : top + h, left : left + w]
        method = cv2.INTER_AREA if max(h, w) / RES >= 2 else cv2.INTER_LINEAR
        view = cv2.resize(crop, (RES, RES), interpolation=method)
        views.append(view[:, ::-1] if flip else view)
    return np.stack(views).transpose(0, 3, 1, 2)


def check_batch(batch, loader, stored, epoch: int, test_view=None) -> None:
    assert batch.views.shape == (len(batch.labels), N, 3, RES, RES)
    assert batch.views.dtype == torch.uint8
    decoder = loader.decoders[0]
    for row, index in enumerate(batch.indices.tolist()):
        T = LENGTHS[index]
        views = batch.views[row].numpy()
        params = sample_params(decoder, index, T, 48, 64, epoch)
        want = ref_clip_params(decoder.seed, epoch, index, T, 48, 64, N, STRIDE, test_view)
        np.testing.assert_array_equal(params, want)
        # The frames decoded, read back from the pixels: the clip's, in time order.
        assert [frame_index(v) for v in views] == want[:, 0].tolist()
        # One crop and flip for every frame: the blue planes agree with each other and
        # with the reference cut of the stored frames.
        blue = views[:, 2].astype(np.int16)
        assert np.abs(blue - blue[0]).mean() < 2.0
        diff = np.abs(views.astype(np.int16) - reference_views(stored[index], want))
        assert diff.mean() < 0.4, (index, diff.mean())  # measured: <= 0.05; 1 px off: 0.8+


def test_clip_batches_from_a_real_file(clips) -> None:
    path, stored = clips
    loader = make_loader(
        path, 2, num_workers=2, sampling="clip", clip_frames=N, clip_stride=STRIDE,
        resolution=RES, seed=5,
    )  # fmt: skip
    for epoch in (0, 1):
        seen = []
        for batch in loader:
            check_batch(batch, loader, stored, epoch)
            seen += batch.indices.tolist()
        assert sorted(seen) == list(range(len(LENGTHS)))
    assert loader.decode_failures == 0
    x = to_model_input(batch, "cpu", image_augment=False)
    assert x.shape == (2, N, 3, RES, RES) and x.dtype == torch.float32


def test_test_views_are_deterministic_and_cover_the_clip(clips) -> None:
    path, stored = clips
    kw = dict(num_workers=2, sampling="clip", clip_frames=N, clip_stride=STRIDE, resolution=RES)
    # The 3 temporal views, each with another of the 3 spatial ones, and the centre view.
    for view in [(0, 3, 0, 3), (1, 3, 1, 3), (2, 3, 2, 3), (0, 1, 0, 1)]:
        loader = make_loader(path, 2, train=False, test_view=view, seed=1, **kw)
        first = {}
        for batch in loader:
            check_batch(batch, loader, stored, 0, test_view=view)
            first.update(zip(batch.indices.tolist(), batch.views.clone(), strict=True))
        assert len(first) == len(LENGTHS)
    other = make_loader(path, 2, train=False, test_view=view, seed=2, **kw)
    for _ in (0, 1):  # another seed, another epoch: the same views
        for batch in other:
            for index, views in zip(batch.indices.tolist(), batch.views, strict=True):
                assert torch.equal(views, first[index])
