"""The WebP frame decoder in ffcv's compiled pipeline, against a Pillow + OpenCV reference."""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import pytest
import torch
from media import noise, sample_params, webp

from vicmae_data.format.beton import Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.load.loader import make_loader
from vicmae_data.load.native import libwebp
from vicmae_data.write.beton_writer import write_beton

RES = 24
VIDEO_HW = (40, 56)
IMAGE_HW = (36, 44)


def pixels(sample: int, frame: int, hw: tuple[int, int]) -> np.ndarray:
    """Noise that identifies (sample, frame): any wrong frame or crop shows."""
    return noise(1000 * sample + frame, *hw)


def make_samples(n: int) -> list[Sample]:
    """Every third sample an image (T = 1, another size), the others 2..7-frame videos."""
    samples = []
    for s in range(n):
        T, hw = (1, IMAGE_HW) if s % 3 == 0 else (2 + s % 6, VIDEO_HW)
        frames = [webp(pixels(s, t, hw), quality=90, lossless=True) for t in range(T)]
        samples.append(Sample(FrameList(frames, *hw), s, {"sample": s}))
    return samples


def interpolation(h: int, w: int) -> int:
    """The loader's rule: bilinear below a 2x downscale, area from 2x on."""
    return cv2.INTER_AREA if max(h, w) / RES >= 2 else cv2.INTER_LINEAR


def reference_views(sample: int, T: int, params: np.ndarray) -> np.ndarray:
    hw = IMAGE_HW if T == 1 else VIDEO_HW
    views = []
    for f, top, left, h, w, flip in params.tolist():
        crop = pixels(sample, f, hw)[top : top + h, left : left + w]
        view = cv2.resize(crop, (RES, RES), interpolation=interpolation(h, w))
        views.append(view[:, ::-1] if flip else view)
    return np.stack(views).transpose(0, 3, 1, 2)  # (V, 3, R, R)


@pytest.fixture(scope="module")
def beton(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("dec") / "mixed.beton"
    write_beton(path, make_samples(12))
    return str(path)


@pytest.fixture(scope="module")
def train_loader(beton: str):
    return make_loader(beton, 4, num_workers=2, resolution=RES, seed=3)


def check_epoch(loader, epoch: int) -> list[int]:
    decoder = loader.decoders[0]
    seen = []
    for batch in loader:
        assert batch.views.shape == (4, 2, 3, RES, RES) and batch.views.dtype == torch.uint8
        for row, sample in enumerate(batch.labels.tolist()):
            T = 1 if sample % 3 == 0 else 2 + sample % 6
            hw = IMAGE_HW if T == 1 else VIDEO_HW
            params = sample_params(decoder, sample, T, *hw, epoch)
            expected = reference_views(sample, T, params)
            np.testing.assert_array_equal(batch.views[row].numpy(), expected)
            assert bool(batch.is_image[row]) == (T == 1)
            seen.append(sample)
    return seen


def test_views_equal_reference_crops(train_loader) -> None:
    seen = check_epoch(train_loader, 0)
    assert sorted(seen) == list(range(12))
    assert train_loader.decode_failures == 0


def test_next_epoch_draws_again_and_still_matches(train_loader) -> None:
    train_loader.set_epoch(1)
    assert sorted(check_epoch(train_loader, 1)) == list(range(12))
    a = sample_params(train_loader.decoders[0], 4, 6, *VIDEO_HW, 0)
    b = sample_params(train_loader.decoders[0], 4, 6, *VIDEO_HW, 1)
    assert not (a == b).all()


def test_distant_views_come_from_both_halves(train_loader) -> None:
    decoder = train_loader.decoders[0]
    for sample in range(12):
        T = 1 if sample % 3 == 0 else 2 + sample % 6
        frames = sample_params(decoder, sample, T, *VIDEO_HW, 0)[:, 0]
        assert frames[0] < max(1, T // 2) and (T == 1 or frames[1] >= T // 2)


def test_eval_mode_center_frame_and_crop(tmp_path, caplog) -> None:
    samples = make_samples(4)
    # A corrupt frame: counted, its view left black, no crash.
    samples.append(Sample(FrameList([b"RIFF not a webp"], *IMAGE_HW), 4, {}))
    path = tmp_path / "eval.beton"
    write_beton(path, samples)
    loader = make_loader(path, 5, num_workers=2, resolution=RES, train=False, num_views=1)
    with caplog.at_level("WARNING", logger="vicmae_data.load.loader"):
        (batch,) = list(loader)
    assert "1 frame(s) failed to decode" in caplog.text
    for row, sample in enumerate(batch.labels.tolist()):
        view = batch.views[row, 0].numpy()
        if sample == 4:
            assert (view == 0).all()
            continue
        T, hw = (1, IMAGE_HW) if sample % 3 == 0 else (2 + sample % 6, VIDEO_HW)
        side = round(min(hw) * 224 / 256)
        top, left = (hw[0] - side) // 2, (hw[1] - side) // 2
        top, left = top - top % 2, left - left % 2
        crop = pixels(sample, T // 2, hw)[top : top + side, left : left + side]
        ref = cv2.resize(crop, (RES, RES), interpolation=interpolation(side, side))
        np.testing.assert_array_equal(view, ref.transpose(2, 0, 1))
    assert loader.decode_failures == 1


def test_libwebp_bindings_full_and_cropped() -> None:
    a = pixels(7, 0, (64, 80))
    lossless = np.frombuffer(webp(a, quality=90, lossless=True), np.uint8)
    wh = np.zeros(2, np.int32)
    assert libwebp.get_info(lossless, wh) == 1 and wh.tolist() == [80, 64]
    out = np.zeros(64 * 80 * 3, np.uint8)
    assert libwebp.decode_rgb_into(lossless, out, 64, 80) == 1
    np.testing.assert_array_equal(out.reshape(64, 80, 3), a)
    config = np.zeros(libwebp.CONFIG_WORDS, np.int64)
    crop = np.zeros(20 * 30 * 3, np.uint8)
    assert libwebp.decode_crop_into(lossless, config, crop, 10, 6, 20, 30) == 1
    np.testing.assert_array_equal(crop.reshape(20, 30, 3), a[10:30, 6:36])
    # Lossy: the cropped decode matches the full one but for chroma upsampling at the edge.
    smooth = cv2.GaussianBlur(a, (0, 0), 3)
    lossy = np.frombuffer(webp(smooth, quality=90), np.uint8)
    assert libwebp.decode_rgb_into(lossy, out, 64, 80) == 1
    assert libwebp.decode_crop_into(lossy, config, crop, 10, 6, 20, 30) == 1
    diff = np.abs(crop.reshape(20, 30, 3).astype(int) - out.reshape(64, 80, 3)[10:30, 6:36])
    assert diff.mean() < 1.0
    junk = np.frombuffer(b"RIFF\x00\x00\x00\x00WEBPVP8 junkjunk", np.uint8)
    assert libwebp.get_info(junk, wh) == 0
    assert libwebp.decode_rgb_into(junk, out, 64, 80) == 0
    assert libwebp.decode_crop_into(junk, config, crop, 0, 0, 20, 30) == 0


@pytest.mark.slow
def test_compiled_code_is_cached_on_disk_for_the_next_process(tmp_path):
    """A fresh numba cache: the first process compiles and saves the kernels (no "cannot
    cache" warning), the second loads every kernel from disk and compiles none of them."""
    import subprocess
    import sys

    beton = tmp_path / "tiny.beton"
    write_beton(beton, make_samples(8))
    script = (
        "import sys, warnings\n"
        "from numba.core.errors import NumbaWarning\n"
        "warnings.simplefilter('error', NumbaWarning)\n"
        "from vicmae_data import make_loader\n"
        "for b in make_loader(sys.argv[1], 4, num_workers=2, resolution=16): pass\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_DEBUG_CACHE="1")
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script, str(beton)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,  # a warning raised in the pipeline thread hangs the process
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(done.stdout + done.stderr)
    for name in ("decode_mapped", "decode_gathered", "decode_batch", "gather_mapped"):
        assert re.search(rf"data saved to .*kernels\.{name}-", runs[0]), name
    # The second process loads the per-batch entry point (its callees are inside it) and
    # compiles none of the loader's own code.
    assert re.search(r"data loaded from .*kernels\.decode_mapped-", runs[1])
    ours = r"(kernels|decoder|crops|samplers|rows|libwebp)"
    assert not re.search(rf"data saved to .*{ours}\.", runs[1])
