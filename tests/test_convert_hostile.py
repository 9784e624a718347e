"""Hostile inputs in one folder: the good kept (even part of a broken file), the bad named."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data.format.beton import BetonFile
from vicmae_data.format.pages import MIN_PAGE_SIZE
from vicmae_data.synth.media import render_clip, write_audio_only, write_video
from vicmae_data.write.convert import convert

runner = CliRunner()
MAX_FRAMES = 40


def write_mp4_moov_first(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.height, s.width, s.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        s.options = {"preset": "ultrafast"}
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, dict, dict]:
    """Convert a folder of hostile files once through the CLI; (root, report, samples)."""
    root = tmp_path_factory.mktemp("hostile")
    good, bad = root / "good", root / "bad"
    good.mkdir()
    bad.mkdir()
    clip = render_clip(0, 30, 48, 64, seed=2)
    write_video(good / "plain.mp4", clip)
    write_video(good / "one_frame.mp4", clip[:1])
    write_video(good / "portrait_odd.webm", render_clip(1, 8, 91, 67), codec="vp9")
    write_video(good / "odd_landscape.mkv", render_clip(1, 8, 45, 77), codec="vp9")
    write_video(good / "ten_bit.mkv", clip[:10], codec="hevc", pix_fmt="yuv420p10le")
    times = np.cumsum(np.r_[0, np.random.default_rng(0).uniform(0.01, 0.15, 19)])
    write_video(good / "vfr.mp4", clip[:20], timestamps=times.tolist())
    write_video(good / "long.mp4", render_clip(2, 3 * MAX_FRAMES, 48, 64))
    write_video(good / "whole.mkv", render_clip(3, 36, 48, 64))
    data = (good / "whole.mkv").read_bytes()
    (good / "half.mkv").write_bytes(data[: len(data) // 2])
    write_mp4_moov_first(good / "moov_first.mp4", render_clip(4, 36, 48, 64))
    data = (good / "moov_first.mp4").read_bytes()
    (good / "half_moov_first.mp4").write_bytes(data[: len(data) * 3 // 4])
    (bad / "zero.mp4").write_bytes(b"")
    data = (good / "plain.mp4").read_bytes()
    (bad / "half.mp4").write_bytes(data[: len(data) // 2])  # moov at the end: nothing left
    write_audio_only(bad / "audio_only.mp4")
    (bad / "text.mp4").write_text("this is not a video\n" * 40)
    (bad / "random.avi").write_bytes(
        np.random.default_rng(5).integers(0, 256, 8192, np.uint8).tobytes()
    )
    (bad / "text.JPEG").write_text("nor an image")

    out = root.parent / f"{root.name}.beton"
    result = runner.invoke(
        app,
        [
            "convert",
            "folder",
            "--root",
            str(root),
            "--out",
            str(out),
            "--workers",
            "1",
            "--short-side",
            "32",
            "--max-frames",
            str(MAX_FRAMES),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(Path(f"{out}.report.json").read_text())
    beton = BetonFile(out)
    by_source = {beton.meta(i)["source"]: beton.sample(i) for i in range(len(beton))}
    return root, report, by_source, result.output


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad/zero.mp4", "empty"),
        ("bad/half.mp4", "undecodable"),
        ("bad/audio_only.mp4", "no video stream"),
        ("bad/text.mp4", "undecodable"),
        ("bad/random.avi", "undecodable"),
        ("bad/text.JPEG", "undecodable image"),
    ],
)
def test_bad_files_are_skipped_and_named(hostile, name, reason):
    _, report, samples, output = hostile
    skipped = {entry["source"]: entry["reason"] for entry in report["skipped"]}
    assert name not in samples
    assert reason in skipped[name]
    assert Path(name).name in output  # the end-of-run summary names it too


def test_nothing_good_is_lost(hostile):
    root, report, samples, _ = hostile
    good = sorted(p.relative_to(root).as_posix() for p in (root / "good").iterdir())
    assert sorted(samples) == good
    assert report["written"] == len(good) and report["totals"]["skipped"] == 6


@pytest.mark.parametrize("name", ["good/half.mkv", "good/half_moov_first.mp4"])
def test_truncated_video_keeps_its_decoded_frames(hostile, name):
    _, report, samples, _ = hostile
    whole = samples["good/whole.mkv" if name.endswith("mkv") else "good/moov_first.mp4"]
    sample = samples[name]
    n = len(sample.frames.frames)
    assert 0 < n < len(whole.frames.frames)
    assert list(sample.frames.frames) == list(whole.frames.frames)[:n]
    assert sample.meta["partial"] is True and sample.meta["partial_reason"]
    assert name in {entry["source"] for entry in report["partial"]}


def test_shapes_rates_and_caps(hostile):
    _, report, samples, _ = hostile
    meta = {name: s.meta for name, s in samples.items()}
    assert meta["good/one_frame.mp4"]["num_frames"] == 1
    assert (meta["good/portrait_odd.webm"]["height"], meta["good/portrait_odd.webm"]["width"]) == (
        43,
        32,
    )
    assert (meta["good/odd_landscape.mkv"]["height"], meta["good/odd_landscape.mkv"]["width"]) == (
        32,
        55,
    )
    assert meta["good/ten_bit.mkv"]["num_frames"] == 10
    assert meta["good/vfr.mp4"]["num_frames"] == 20 and 0 < meta["good/vfr.mp4"]["fps"] < 25
    assert meta["good/long.mp4"]["num_frames"] == MAX_FRAMES
    assert "max_frames" in meta["good/long.mp4"]["capped"]
    assert [e["source"] for e in report["capped"]] == ["good/long.mp4"]
    assert not any(m["partial"] for n, m in meta.items() if "half" not in n)


FFCV_DEFAULT_PAGE = 8 << 20  # what ffcv's writer uses unless told otherwise


def test_sample_larger_than_the_default_page_and_the_byte_cap(tmp_path, caplog):
    """A clip whose frames exceed ffcv's 8 MiB page is written (bigger page); a byte cap
    stops a clip with a warning instead of failing."""
    noise = np.random.default_rng(0).integers(0, 256, (50, 256, 320, 3), np.uint8)
    (tmp_path / "clips" / "a").mkdir(parents=True)
    write_video(tmp_path / "clips" / "a" / "noise.mkv", noise, codec="mjpeg", pix_fmt="yuvj444p")
    big = tmp_path / "big.beton"
    report = convert("folder", tmp_path / "clips", big, workers=1, quality=100, method=0)
    assert report.totals["bytes"] > FFCV_DEFAULT_PAGE
    beton = BetonFile(big)
    assert beton.page_size > FFCV_DEFAULT_PAGE and len(beton.frame_bytes(0)) == 50
    capped = convert(
        "folder",
        tmp_path / "clips",
        tmp_path / "cap.beton",
        workers=1,
        quality=100,
        method=0,
        max_sample_bytes=MIN_PAGE_SIZE // 4,
    )
    meta = BetonFile(tmp_path / "cap.beton").meta(0)
    assert 0 < meta["num_frames"] < 50 and "max_sample_bytes" in meta["capped"]
    assert capped.capped and "max_sample_bytes" in caplog.text
