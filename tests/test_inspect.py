"""`read_sample`, `info`, `verify`, `preview` on real .beton files written by `write_beton`.

Frames are lossless WebP (libwebp through Pillow), so a round trip must be exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from media import webp
from PIL import Image
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data import read_sample
from vicmae_data.format.beton import BetonError, BetonFile, Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.format.pages import MIN_PAGE_SIZE
from vicmae_data.inspect.info import info
from vicmae_data.inspect.preview import pick_frames, sheet_layout, write_preview
from vicmae_data.inspect.read import decode_frame
from vicmae_data.inspect.verify import verify
from vicmae_data.write.beton_writer import write_beton

runner = CliRunner()

CLASSES = ["abseiling", "bowling", "cartwheeling"]
# (num_frames, height, width, label): four videos and two images (T = 1), two sizes.
LAYOUT = [
    (3, 24, 32, 0),
    (8, 24, 32, 1),
    (5, 24, 32, 2),
    (1, 32, 24, 0),
    (4, 24, 32, 1),
    (1, 32, 24, 2),
]


def _frames(seed: int, t: int, h: int, w: int) -> np.ndarray:
    """A moving gradient plus noise: [T, H, W, 3] uint8, different for every frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), dtype=np.uint8)
    for k in range(t):
        out[k, ..., 0] = (x * 7 + k * 20) % 256
        out[k, ..., 1] = (y * 9 + seed * 40) % 256
        out[k, ..., 2] = rng.integers(0, 256, (h, w))
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[Path, list[np.ndarray], list[Sample]]:
    """A .beton of LAYOUT, the decoded frames it holds, and the samples written."""
    arrays, samples = [], []
    for i, (t, h, w, label) in enumerate(LAYOUT):
        frames = _frames(i, t, h, w)
        meta = {
            "source": f"clips/{CLASSES[label]}/item{i}.mp4",
            "class_name": CLASSES[label],
            "dataset": "toy",
            "fps": 10.0 if t > 1 else 0.0,
            "num_frames": t,
            "height": h,
            "width": w,
            "partial": i == 2,
        }
        arrays.append(frames)
        samples.append(
            Sample(FrameList([webp(f, lossless=True) for f in frames], h, w), label, meta)
        )
    path = tmp_path_factory.mktemp("inspect") / "toy.beton"
    write_beton(path, samples)
    return path, arrays, samples


def _one_line_error(result) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err


# --------------------------------------------------------------------------- read_sample


def test_read_sample_round_trip_is_exact(toy):
    path, arrays, samples = toy
    for i, expected in enumerate(arrays):
        frames, label, meta = read_sample(path, i)
        assert frames.dtype == np.uint8 and frames.shape == expected.shape
        np.testing.assert_array_equal(frames, expected)
        assert label == samples[i].label
        assert meta == samples[i].meta


def test_read_sample_by_source_name(toy):
    path, arrays, samples = toy
    for i in (0, len(arrays) - 1):
        frames, label, meta = read_sample(path, source=samples[i].meta["source"])
        np.testing.assert_array_equal(frames, arrays[i])
        assert label == samples[i].label and meta == samples[i].meta
    with pytest.raises(KeyError, match="no sample with source"):
        read_sample(path, source="clips/nowhere.mp4")
    with pytest.raises(ValueError, match="exactly one"):
        read_sample(path, 0, source=samples[0].meta["source"])


def test_read_sample_bad_index_and_bad_file(toy, tmp_path):
    path, arrays, _ = toy
    with pytest.raises(IndexError, match=f"out of range.*{len(arrays)} samples"):
        read_sample(path, len(arrays))
    with pytest.raises(IndexError):
        read_sample(path, -1)
    junk = tmp_path / "junk.beton"
    junk.write_bytes(b"this is not a beton file" * 10)
    with pytest.raises(BetonError):
        read_sample(junk, 0)
    with pytest.raises(BetonError, match="no such file"):
        read_sample(tmp_path / "missing.beton", 0)


# --------------------------------------------------------------------------- info


def test_info_numbers(toy):
    path, _, samples = toy
    s = info(path)
    assert s.samples == 6 and s.videos == 4 and s.images == 2
    assert s.frames_total == 22
    assert (s.frames_min, s.frames_median, s.frames_max) == (1, 3.5, 8)
    assert (s.height_min, s.height_max, s.width_min, s.width_max) == (24, 32, 24, 32)
    assert s.common_resolution == (24, 32)
    webp_bytes = sum(len(f) for smp in samples for f in smp.frames.frames)
    assert s.frame_bytes_total == webp_bytes
    assert s.bytes_per_frame == pytest.approx(webp_bytes / 22)
    assert s.class_names == dict(enumerate(CLASSES))
    assert s.class_counts == {0: 2, 1: 2, 2: 2}
    assert s.datasets == {"toy": 6} and s.partial == 1
    assert s.file_bytes == path.stat().st_size and s.page_size == MIN_PAGE_SIZE
    assert not s.meta_sampled


def test_info_samples_meta_on_big_files_but_keeps_every_class(toy):
    s = info(toy[0], exact_limit=2)
    assert s.meta_sampled and s.meta_read < s.samples
    assert s.class_names == dict(enumerate(CLASSES))  # first sample of each class is read
    assert s.frames_total == 22  # table numbers stay exact


def test_info_cli_human_and_json(toy):
    path = toy[0]
    human = runner.invoke(app, ["info", str(path)])
    assert human.exit_code == 0, human.output
    for text in ("samples", "4 videos, 2 images", "1 / 3.5 / 8", "bowling", "toy: 6"):
        assert text in human.stdout, text
    as_json = runner.invoke(app, ["info", str(path), "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data == json.loads(json.dumps(info(path).to_dict()))
    assert data["samples"] == 6 and data["class_names"]["2"] == "cartwheeling"


# --------------------------------------------------------------------------- verify


def _damage(data: bytearray, src: Path, index: int, frame: int, at: int) -> None:
    """Flip 4 bytes of one frame's WebP data, ``at`` bytes into the frame."""
    row = BetonFile(src).frames_meta[index]
    ptr, t = int(row["ptr"]), int(row["num_frames"])
    offsets = np.frombuffer(bytes(data[ptr : ptr + 4 * (t + 1)]), dtype="<u4")
    start = ptr + int(offsets[frame])
    assert data[start : start + 4] == b"RIFF"  # we are inside the frame we meant
    for k in range(start + at, start + at + 4):
        data[k] ^= 0xFF


def test_verify_passes_a_good_file(toy):
    path = toy[0]
    report = verify(path)
    assert report.ok and report.samples == 6 and report.frames == 22
    result = runner.invoke(app, ["verify", str(path)])
    assert result.exit_code == 0, result.output
    assert "22 frames" in result.stdout


def test_verify_names_the_damaged_sample(toy, tmp_path):
    path, _, samples = toy
    bad = tmp_path / "damaged.beton"
    data = bytearray(path.read_bytes())
    # WebP has no checksum: damage a decoder must notice. Sample 1, frame 5: the VP8L
    # header (signature, size, version bits); sample 4, frame 0: the RIFF length.
    _damage(data, path, index=1, frame=5, at=21)
    _damage(data, path, index=4, frame=0, at=4)
    bad.write_bytes(bytes(data))
    for workers in (1, 2):
        report = verify(bad, workers=workers)
        assert [b.index for b in report.bad] == [1, 4]
        assert [b.source for b in report.bad] == [samples[i].meta["source"] for i in (1, 4)]
        assert report.bad[0].reason.startswith("frame 5")
        assert report.bad[1].reason.startswith("frame 0")
        assert report.frames == 22
    result = runner.invoke(app, ["verify", str(bad), "--workers", "2"])
    assert result.exit_code == 1, result.output
    assert "item1.mp4" in result.stdout and "item4.mp4" in result.stdout
    assert "2 bad samples" in result.stdout


def test_verify_catches_damage_that_still_decodes(toy, tmp_path):
    # Flipped bytes in the middle of a frame's image data usually decode to a subtly
    # wrong picture; only the CRC32 stored with each sample's frames gives them away.
    path = toy[0]
    bad = tmp_path / "silently-damaged.beton"
    data = bytearray(path.read_bytes())
    frames = BetonFile(path).frame_bytes(2)
    _damage(data, path, index=2, frame=0, at=len(frames[0]) // 2)
    bad.write_bytes(bytes(data))
    assert BetonFile(path).checksum_ok(2) and not BetonFile(bad).checksum_ok(2)
    damaged = BetonFile(bad).frame_bytes(2)[0]
    assert damaged != frames[0]
    assert decode_frame(damaged).shape == decode_frame(frames[0]).shape  # still decodes
    report = verify(bad)
    assert [b.index for b in report.bad] == [2]
    assert "CRC32" in report.bad[0].reason


def test_decode_frame_rejects_junk():
    with pytest.raises(ValueError, match="undecodable"):
        decode_frame(b"RIFF\x00\x00\x00\x00WEBPjunkjunk")


# --------------------------------------------------------------------------- preview


def test_pick_frames_spreads_from_first_to_last():
    assert pick_frames(5, 16) == [0, 1, 2, 3, 4]
    assert pick_frames(100, 4) == [0, 33, 66, 99]


def test_preview_writes_png_of_expected_size(toy, tmp_path):
    path, arrays, _ = toy
    out = tmp_path / "grid.png"
    write_preview(path, 1, out, max_frames=4, cols=2, thumb_width=64)
    layout = sheet_layout(4, 24, 32, cols=2, thumb_width=64)
    assert (layout.cols, layout.rows, layout.thumb_h) == (2, 2, 48)
    assert (layout.width, layout.height) == (2 * (64 + 6) + 6, 26 + 2 * (48 + 18 + 6) + 6)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (layout.width, layout.height)
        sheet = np.asarray(im.convert("RGB"))
    assert not list(tmp_path.glob("*.tmp"))
    # The last thumbnail shows the last frame (index 7), scaled 2x: compare channel means.
    x, y = layout.origin(3)
    thumb = sheet[y : y + layout.thumb_h, x : x + layout.thumb_w].astype(float)
    expected = arrays[1][7].astype(float)
    np.testing.assert_allclose(thumb.mean(axis=(0, 1)), expected.mean(axis=(0, 1)), atol=6)


def test_preview_cli(toy, tmp_path):
    path = toy[0]
    out = tmp_path / "sheet.png"
    result = runner.invoke(app, ["preview", str(path), "--index", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    layout = sheet_layout(1, 32, 24)
    with Image.open(out) as im:
        assert im.size == (layout.width, layout.height)
    too_far = runner.invoke(app, ["preview", str(path), "--index", "99", "--out", str(out)])
    _one_line_error(too_far)


# --------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize("command", [["info"], ["verify"], ["preview", "--out", "x.png"]])
def test_cli_missing_or_bad_file_is_one_line_exit_2(command, tmp_path):
    missing = tmp_path / "nope.beton"
    _one_line_error(runner.invoke(app, [command[0], str(missing), *command[1:]]))
    junk = tmp_path / "junk.beton"
    junk.write_text("not a beton")
    _one_line_error(runner.invoke(app, [command[0], str(junk), *command[1:]]))
