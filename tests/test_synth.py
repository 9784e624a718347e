"""`vicmae-data synth`: real media in each dataset's real layout, with recoverable classes."""

from __future__ import annotations

import csv
import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data.synth.dataset import (
    FOLDER_FILES,
    KINETICS_CLASSES,
    LAYOUTS,
    SynthSummary,
    synth_dataset,
)
from vicmae_data.synth.media import (
    PALETTE,
    ClipSpec,
    class_appearance,
    render_clip,
    write_audio_only,
    write_image,
    write_video,
)

runner = CliRunner()
VIDEOS = 10  # per split: >= the most classes of any layout (7), and every profile once


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, SynthSummary]:
    base = tmp_path_factory.mktemp("synth")
    return {layout: synth_dataset(layout, base / layout, videos=VIDEOS) for layout in LAYOUTS}


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_file_opens_and_matches_the_summary(made, layout):
    summary = made[layout]
    assert summary.counts() == {"train": VIDEOS, "val": VIDEOS}
    for item in summary.items:
        path = summary.root / item.path
        if item.kind == "video":
            frames = _decode(path)
            assert len(frames) == item.num_frames, item.path
            assert frames[0].shape == (item.height, item.width, 3), item.path
        else:
            with Image.open(path) as im:
                im.load()
                assert im.size == (item.width, item.height), item.path
    # Writers go through a hidden temporary name; none may be left behind.
    assert not list(summary.root.rglob("*.part"))


def test_kinetics_csv_lists_every_clip_with_quoted_labels(made):
    for layout in ("kinetics400", "kinetics600", "kinetics700"):
        root = made[layout].root
        clips = {p.name: p for p in (root / "train").rglob("*.mp4")}
        assert len(clips) == VIDEOS
        text = (root / "annotations" / "train.csv").read_text()
        header = text.splitlines()[0]
        expected = "label,youtube_id,time_start,time_end,split"
        assert header == expected + (",is_cc" if layout == "kinetics700" else "")
        assert '"air drumming",' in text  # labels with spaces are quoted, as shipped
        rows = list(csv.DictReader(text.splitlines()))
        names = {
            f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}.mp4": r
            for r in rows
        }
        assert set(clips) == set(names)
        for name, path in clips.items():
            if layout == "kinetics600":  # the flat variant
                assert path.parent == root / "train"
            else:
                assert path.parent.name == names[name]["label"]
        assert list(KINETICS_CLASSES[layout]) == sorted(KINETICS_CLASSES[layout])


def test_kinetics_mixes_codecs_sizes_and_frame_rates(made):
    items = made["kinetics400"].written("train")
    codecs = set()
    for item in items:
        with av.open(str(made["kinetics400"].root / item.path)) as c:
            codecs.add(c.streams.video[0].codec_context.name)
    assert {"h264", "vp9", "mpeg4", "hevc"} <= codecs
    assert any(i.height > i.width for i in items)  # portrait
    assert any(i.width % 2 for i in items)  # odd size
    assert len({i.fps for i in items}) >= 4
    assert all(96 <= max(i.width, i.height) <= 200 for i in items)


def test_folder_mixes_containers_and_images(made):
    root = made["folder"].root
    suffixes = {p.suffix for p in (root / "train").rglob("*") if p.is_file()}
    assert {ext for ext, _ in FOLDER_FILES} <= suffixes
    assert (root / "train" / "cats" / ".DS_Store").exists()  # clutter readers must skip


def test_imagenet_quirks_and_val_solution(made):
    root = made["imagenet"].root
    seen = set()
    for path in (root / "train").rglob("*.JPEG"):
        with Image.open(path) as im:
            seen.add((im.format, im.mode))
    assert {("PNG", "RGB"), ("JPEG", "CMYK"), ("JPEG", "L"), ("JPEG", "RGB")} <= seen
    rows = (root / "LOC_val_solution.csv").read_text().splitlines()
    assert rows[0] == "ImageId,PredictionString"
    val = {p.stem for p in (root / "val").glob("*.JPEG")}
    assert {r.split(",")[0] for r in rows[1:]} == val
    mapping = (root / "LOC_synset_mapping.txt").read_text().splitlines()
    assert mapping[0] == "n01440764 tench, Tinca tinca"


def test_mit_files_and_categories(made):
    root = made["mit"].root
    rows = list(csv.reader((root / "trainingSet.csv").read_text().splitlines()))
    assert len(rows) == VIDEOS and rows[0][0].split("/")[0] == rows[0][1]  # no header
    for rel, label, *_ in rows:
        assert rel.startswith(f"{label}/") and (root / "training" / rel).is_file()
    cats = dict(line.split(",") for line in (root / "moments_categories.txt").read_text().split())
    assert sorted(int(i) for i in cats.values()) == list(range(len(cats)))
    for item in made["mit"].items:
        assert int(cats[item.class_name]) == item.label


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    def digest(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    a = synth_dataset("kinetics400", tmp_path / "a", videos=3, seed=7, splits=("train",))
    b = synth_dataset("kinetics400", tmp_path / "b", videos=3, seed=7, splits=("train",))
    c = synth_dataset("kinetics400", tmp_path / "c", videos=3, seed=8, splits=("train",))
    assert a.items == b.items
    assert digest(a.root) == digest(b.root)
    assert digest(a.root) != digest(c.root)


def _features(frames: list[np.ndarray]) -> np.ndarray:
    # Each frame mean-pooled to 8x8 cells, the cells' colours sorted per channel (so the
    # feature ignores where the shape is), averaged over time: all a trivial classifier sees.
    feats = []
    for f in frames:
        h, w = f.shape[0] // 8 * 8, f.shape[1] // 8 * 8
        cells = f[:h, :w].astype(np.float32).reshape(8, h // 8, 8, w // 8, 3).mean(axis=(1, 3))
        feats.append(np.sort(cells.reshape(64, 3), axis=0).ravel())  # [192]
    return np.mean(feats, axis=0)


def test_class_is_recoverable_by_nearest_mean(tmp_path):
    summary = synth_dataset("kinetics400", tmp_path / "k", videos=20, seed=3)
    feats = {
        s: [(_features(_decode(summary.root / i.path)), i.label) for i in summary.written(s)]
        for s in ("train", "val")
    }
    classes = sorted({y for _, y in feats["train"]})
    means = np.stack([np.mean([x for x, y in feats["train"] if y == k], axis=0) for k in classes])
    correct = [int(np.argmin(((means - x) ** 2).sum(1))) == y for x, y in feats["val"]]
    chance = 1 / len(classes)
    assert np.mean(correct) >= chance + 0.6


def test_render_clip_is_deterministic_and_class_coded():
    a = render_clip(2, 5, 40, 50, seed=1)
    assert a.shape == (5, 40, 50, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_clip(2, 5, 40, 50, seed=1))
    assert not np.array_equal(a, render_clip(2, 5, 40, 50, seed=2))
    assert not np.array_equal(a[0], a[-1])  # it moves
    colour = np.array(class_appearance(2)[0])
    assert (np.abs(a[0].astype(int) - colour).sum(-1) == 0).sum() > 20  # the shape is drawn
    assert len({class_appearance(k)[0] for k in range(len(PALETTE))}) == len(PALETTE)
    with pytest.raises(ValueError):
        render_clip(0, 0, 40, 50)


def test_write_video_variants_for_hostile_inputs(tmp_path):
    spec = ClipSpec(1, 6, 64, 80, seed=0)
    ten_bit = write_video(tmp_path / "ten.mp4", spec, pix_fmt="yuv420p10le")
    with av.open(str(ten_bit)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    times = [0.0, 0.04, 0.3, 0.31, 0.9, 1.5]
    vfr = write_video(tmp_path / "vfr.mkv", spec, timestamps=times)
    with av.open(str(vfr)) as c:
        assert [round(f.time, 2) for f in c.decode(video=0)] == times
    with_audio = write_video(tmp_path / "a.webm", spec, codec="vp9", audio=True)
    with av.open(str(with_audio)) as c:
        assert len(c.streams.audio) == 1 and len(c.streams.video) == 1
    audio_only = write_audio_only(tmp_path / "sound.mp4", seconds=0.5)
    with av.open(str(audio_only)) as c:
        assert len(c.streams.video) == 0 and len(c.streams.audio) == 1
    ntsc = write_video(tmp_path / "ntsc.avi", spec, codec="mpeg4", fps=Fraction(30000, 1001))
    assert len(_decode(ntsc)) == 6
    with pytest.raises(ValueError, match="odd size"):
        write_video(tmp_path / "odd.mp4", render_clip(0, 2, 33, 40))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [])
    assert not (tmp_path / "odd.mp4").exists() and not (tmp_path / "empty.mp4").exists()
    assert not list(tmp_path.glob(".*.part"))


def test_write_image_formats(tmp_path):
    frame = render_clip(0, 1, 30, 40)[0]
    for fmt, mode in (("JPEG", "CMYK"), ("JPEG", "L"), ("PNG", "RGB"), ("WEBP", "RGB")):
        path = write_image(tmp_path / f"x_{mode}_{fmt}.JPEG", frame, format=fmt, mode=mode)
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == (fmt, mode, (40, 30))


def test_cli_help_success_and_errors(tmp_path):
    result = runner.invoke(app, ["synth", "--help"])
    assert result.exit_code == 0 and "Example: vicmae-data synth" in result.output

    out = tmp_path / "k4"
    args = ["synth", "--layout", "kinetics400", "--out", str(out), "--videos", "2"]
    result = runner.invoke(app, [*args, "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "train" in result.output
    assert len(list((out / "train").rglob("*.mp4"))) == 2
    assert (out / "annotations" / "train.csv").is_file()
    assert not (out / "annotations" / "val.csv").exists()

    bad = runner.invoke(app, ["synth", "--layout", "kinetics", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
    assert bad.stderr.strip().count("\n") == 0 and "unknown layout" in bad.stderr
    assert "Traceback" not in bad.output

    a_file = tmp_path / "file"
    a_file.write_text("")
    bad = runner.invoke(app, ["synth", "--layout", "mit", "--out", str(a_file)])
    assert bad.exit_code == 2 and "not a folder" in bad.stderr
