"""One item -> WebP frames: sizes, fidelity, fps cap (also VFR), caps, images, bad files."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vicmae_data.synth.media import render_clip, write_audio_only, write_image, write_video
from vicmae_data.write.transcode import (
    SkipError,
    TranscodeSettings,
    rgb_frame,
    target_size,
    transcode,
)

SMALL = TranscodeSettings(short_side=48)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def decode_webp(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "WEBP"
        return np.asarray(img.convert("RGB"))


def reference_frames(path: Path, short_side: int) -> list[np.ndarray]:
    """The source decoded by PyAV and resized the way conversion does, all frames."""
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            h, w = target_size(frame.height, frame.width, short_side)
            out.append(rgb_frame(frame, h, w))
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    clip = render_clip(2, 24, 72, 96, seed=1)  # [T, H, W, 3]
    write_video(d / "clip.mp4", clip, fps=25)
    write_video(d / "ten_bit.mkv", clip[:8], codec="hevc", pix_fmt="yuv420p10le")
    write_video(d / "portrait_odd.webm", render_clip(3, 6, 91, 67), codec="vp9")
    write_video(d / "one.mp4", clip[:1])
    # Variable frame rate: gaps from 10 ms to 200 ms.
    gaps = np.random.default_rng(0).uniform(0.01, 0.2, size=23)
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    write_video(d / "vfr.mp4", clip, timestamps=times.tolist())
    np.save(d / "vfr_times.npy", np.round(times * 1000) / 1000)
    write_audio_only(d / "audio.mp4")
    (d / "zero.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("not a video\n" * 50)
    (d / "random.mp4").write_bytes(
        np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes()
    )
    # Matroska is written front to back: cut in half, the first half still decodes.
    write_video(d / "whole.mkv", render_clip(1, 60, 72, 96))
    data = (d / "whole.mkv").read_bytes()
    (d / "half.mkv").write_bytes(data[: len(data) // 2])
    # mp4 with its index (moov) at the end: cut in half, nothing can be found.
    data = (d / "clip.mp4").read_bytes()
    (d / "half.mp4").write_bytes(data[: len(data) // 2])
    image = render_clip(4, 1, 90, 120)[0]
    write_image(d / "cmyk.JPEG", image, mode="CMYK", quality=95)
    write_image(d / "grey.JPEG", image, mode="L", quality=95)
    write_image(d / "png.JPEG", image, format="PNG")
    write_image(d / "portrait.png", np.ascontiguousarray(image.transpose(1, 0, 2)), format="PNG")
    return d


def test_target_size_keeps_aspect_and_never_upscales():
    assert target_size(1080, 1920, 256) == (256, 455)
    assert target_size(1920, 1080, 256) == (455, 256)
    assert target_size(91, 67, 48) == (65, 48)
    assert target_size(200, 100, 256) == (200, 100)
    assert target_size(256, 256, 256) == (256, 256)


def test_video_frames_match_pyav_decode(media):
    result = transcode(media / "clip.mp4", SMALL)
    ref = reference_frames(media / "clip.mp4", 48)
    assert result.num_frames == len(ref) == 24
    assert (result.height, result.width) == (48, 64)
    assert result.fps == pytest.approx(25.0) and result.partial is None and result.capped is None
    for data, want in zip(result.frames, ref, strict=True):
        got = decode_webp(data)
        assert got.shape == want.shape
        assert psnr(got, want) > 30
    # Frames are in order: each matches its own reference better than the previous one's.
    assert psnr(decode_webp(result.frames[10]), ref[10]) > psnr(
        decode_webp(result.frames[10]), ref[0]
    )


def test_ten_bit_input(media):
    result = transcode(media / "ten_bit.mkv", SMALL)
    assert result.extra["pix_fmt"].endswith("10le")
    ref = reference_frames(media / "ten_bit.mkv", 48)
    assert result.num_frames == 8
    assert min(psnr(decode_webp(f), r) for f, r in zip(result.frames, ref, strict=True)) > 30


def test_portrait_odd_size_and_one_frame(media):
    result = transcode(media / "portrait_odd.webm", SMALL)
    assert (result.height, result.width, result.num_frames) == (65, 48, 6)
    assert decode_webp(result.frames[0]).shape == (65, 48, 3)
    one = transcode(media / "one.mp4", SMALL)
    assert one.num_frames == 1 and one.partial is None


def kept_by_cap(times: np.ndarray, fps: float) -> list[int]:
    """NumPy reference of the fps cap: the first frame of each 1/fps slot of time."""
    slots = np.floor((times - times[0]) * fps + 1e-6).astype(int)
    return [i for i in range(len(times)) if i == 0 or slots[i] > slots[:i].max()]


@pytest.mark.parametrize("cap", [4.0, 10.0])
def test_fps_cap_uses_timestamps_on_vfr(media, cap):
    times = np.load(media / "vfr_times.npy")
    want = kept_by_cap(times, cap)
    assert len(want) < len(times)  # the cap must drop something for the test to mean much
    result = transcode(media / "vfr.mp4", TranscodeSettings(short_side=48, fps=cap))
    ref = reference_frames(media / "vfr.mp4", 48)
    assert result.num_frames == len(want)
    for data, index in zip(result.frames, want, strict=True):
        got = decode_webp(data)
        assert psnr(got, ref[index]) > 30
        # The kept frame is that one and not a neighbour.
        others = [psnr(got, ref[j]) for j in (index - 1, index + 1) if 0 <= j < len(ref)]
        assert psnr(got, ref[index]) > max(others)


def test_fps_cap_on_constant_rate(media):
    result = transcode(media / "clip.mp4", TranscodeSettings(short_side=48, fps=10))
    assert result.num_frames == len(kept_by_cap(np.arange(24) / 25, 10)) == 10
    assert result.fps == 10 and result.source_fps == pytest.approx(25)
    native = transcode(media / "clip.mp4", TranscodeSettings(short_side=48, fps=50))
    assert native.num_frames == 24 and native.fps == pytest.approx(25)


def test_max_frames_and_byte_cap(media, caplog):
    capped = transcode(media / "clip.mp4", TranscodeSettings(short_side=48, max_frames=5))
    assert capped.num_frames == 5 and "max_frames" in capped.capped and capped.partial is None
    whole = transcode(media / "clip.mp4", SMALL)
    limit = sum(len(f) for f in whole.frames[:7]) + 1
    with caplog.at_level(logging.WARNING):
        small = transcode(
            media / "clip.mp4", TranscodeSettings(short_side=48, max_sample_bytes=limit)
        )
    assert small.num_frames == 7 and small.nbytes < limit
    assert small.frames == whole.frames[:7]
    assert "max_sample_bytes" in small.capped and "max_sample_bytes" in caplog.text


def test_truncated_streamable_video_keeps_decoded_frames(media):
    result = transcode(media / "half.mkv", SMALL)
    whole = transcode(media / "whole.mkv", SMALL)
    assert 0 < result.num_frames < whole.num_frames
    assert result.partial is not None and "early" in result.partial
    assert result.frames == whole.frames[: result.num_frames]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("zero.mp4", "empty"),
        ("text.mp4", "undecodable"),
        ("random.mp4", "undecodable"),
        ("audio.mp4", "no video stream"),
        ("half.mp4", "undecodable"),
        ("absent.mp4", "unreadable"),
    ],
)
def test_bad_files_are_skipped_with_a_reason(media, name, reason):
    with pytest.raises(SkipError) as info:
        transcode(media / name, SMALL)
    assert reason in info.value.reason
    assert "\n" not in info.value.reason and str(media) not in info.value.reason


@pytest.mark.parametrize("name", ["cmyk.JPEG", "grey.JPEG", "png.JPEG", "portrait.png"])
def test_images_become_one_rgb_frame(media, name):
    result = transcode(media / name, SMALL)
    assert result.num_frames == 1 and result.fps == 0.0
    source = np.asarray(Image.open(media / name).convert("RGB"))
    h, w = target_size(*source.shape[:2], 48)
    assert (result.height, result.width) == (h, w)
    want = np.asarray(Image.fromarray(source).resize((w, h), Image.Resampling.BILINEAR))
    got = decode_webp(result.frames[0])
    assert got.shape == (h, w, 3)
    assert psnr(got, want) > 28
    if name == "grey.JPEG":
        assert np.abs(got[..., 0].astype(int) - got[..., 2]).max() <= 6  # still grey


def test_settings_validate():
    with pytest.raises(ValueError):
        TranscodeSettings(method=7)
    with pytest.raises(ValueError):
        TranscodeSettings(fps=0)
    with pytest.raises(ValueError):
        TranscodeSettings(max_frames=0)
