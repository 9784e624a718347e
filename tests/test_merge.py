"""`merge`: shards join sample for sample; different datasets get disjoint labels."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from media import noise, webp
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data.format.beton import BetonError, BetonFile, Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.inspect.info import info
from vicmae_data.write.beton_writer import write_beton
from vicmae_data.write.merge import MergedSamples, MergeWarning, merge, plan_merge

runner = CliRunner()

VIDEO_CLASSES = ["abseiling", "bowling", "cartwheeling"]
IMAGE_CLASSES = ["n01440764", "n01443537"]


def _write(path: Path, dataset: str, classes: list[str], labels: list[int], frames: int) -> Path:
    """A .beton of ``dataset``: one sample per label, ``frames`` frames each (1: images)."""
    samples = []
    for i, label in enumerate(labels):
        seed = zlib.crc32(f"{dataset}/{path.name}/{i}".encode())
        h, w = (16, 20) if frames > 1 else (20, 16)
        meta = {
            "source": f"{dataset}/{path.stem}/{i}",
            "class_name": classes[label],
            "dataset": dataset,
            "fps": 8.0 if frames > 1 else 0.0,
            "num_frames": frames,
            "height": h,
            "width": w,
            "partial": False,
        }
        webps = [webp(noise(seed + t, h, w)) for t in range(frames)]
        samples.append(Sample(FrameList(webps, h, w), label, meta))
    return write_beton(path, samples)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("merge")
    return {
        "k0": _write(d / "k.0.beton", "kinetics400", VIDEO_CLASSES, [0, 1, 2, 1], 3),
        "k1": _write(d / "k.1.beton", "kinetics400", VIDEO_CLASSES, [2, 0, 2], 4),
        "k2": _write(d / "k.2.beton", "kinetics400", VIDEO_CLASSES, [1, 1], 2),  # no class 0, 2
        "img": _write(d / "img.beton", "imagenet", IMAGE_CLASSES, [1, 0, 1], 1),
    }


def _all(path: Path) -> list[Sample]:
    beton = BetonFile(path)
    return [beton.sample(i) for i in range(len(beton))]


def test_merging_shards_is_concatenation(files, tmp_path):
    out = tmp_path / "all.beton"
    result = merge([files["k0"], files["k1"], files["k2"]], out)
    assert not result.plan.relabelled and result.plan.offsets == (0, 0, 0)
    expected = _all(files["k0"]) + _all(files["k1"]) + _all(files["k2"])
    got = _all(out)
    assert len(got) == len(expected) == 9
    for g, e in zip(got, expected, strict=True):
        assert list(g.frames.frames) == list(e.frames.frames)  # bytes copied, not re-encoded
        assert (g.frames.height, g.frames.width) == (e.frames.height, e.frames.width)
        assert g.label == e.label and g.meta == e.meta
    assert not list(tmp_path.glob("*.tmp"))


def test_merging_images_and_videos_gives_disjoint_labels(files, tmp_path):
    out = tmp_path / "mixed.beton"
    with pytest.warns(MergeWarning, match="different class lists"):
        result = merge([files["k0"], files["img"], files["k1"]], out)
    # Both Kinetics shards share a label space; ImageNet goes after it.
    assert result.plan.offsets == (0, 3, 0)
    samples = _all(out)
    assert [s.label for s in samples] == [0, 1, 2, 1, 4, 3, 4, 2, 0, 2]
    assert [s.meta["orig_label"] for s in samples] == [0, 1, 2, 1, 1, 0, 1, 2, 0, 2]
    assert info(out).class_names == {
        0: "abseiling",
        1: "bowling",
        2: "cartwheeling",
        3: "n01440764",
        4: "n01443537",
    }
    by_dataset = {s.meta["dataset"] for s in samples if s.label >= 3}
    assert by_dataset == {"imagenet"}
    assert [s.frames.frames for s in samples[4:7]] == [s.frames.frames for s in _all(files["img"])]


def test_relabel_modes(files):
    forced = plan_merge([files["k0"], files["k1"]], "offset")
    assert forced.offsets == (0, 3) and forced.relabelled
    with pytest.raises(ValueError, match="relabel"):
        plan_merge([files["k0"]], "sideways")  # type: ignore[arg-type]
    kept = plan_merge([files["k0"], files["img"]], "keep")
    assert kept.offsets == (0, 0) and not kept.relabelled
    assert any("different classes" in n for n in kept.notes)


def test_merged_samples_read_lazily(files):
    seq = MergedSamples(plan_merge([files["k0"], files["k1"]]))
    assert seq._open == {}  # nothing opened before a sample is asked for
    assert seq[5].meta["source"] == "kinetics400/k.1/1"
    assert list(seq._open) == [1]  # only the file holding sample 5
    assert len(seq) == 7 and seq[6].meta["source"].startswith("kinetics400/k.1/")
    with pytest.raises(IndexError):
        seq[7]


def test_merge_refuses_to_overwrite_an_input(files):
    before = files["k0"].read_bytes()
    with pytest.raises(ValueError, match="refusing to overwrite"):
        merge([files["k0"], files["k1"]], files["k0"])
    result = runner.invoke(
        app, ["merge", str(files["k1"]), str(files["k0"]), "-o", str(files["k0"])]
    )
    assert result.exit_code == 2 and "refusing to overwrite" in result.stderr
    assert files["k0"].read_bytes() == before


def test_merge_joins_conversion_reports(files, tmp_path):
    for key, skipped in (("k0", ["a.mp4"]), ("k1", ["b.mp4", "c.mp4"])):
        report = {
            "written": 3,
            "skipped": [{"path": p, "reason": "zero bytes"} for p in skipped],
            "partial": [],
        }
        files[key].with_name(files[key].name + ".report.json").write_text(json.dumps(report))
    out = tmp_path / "all.beton"
    try:
        result = merge([files["k0"], files["k1"]], out)
    finally:
        for key in ("k0", "k1"):
            files[key].with_name(files[key].name + ".report.json").unlink()
    merged = json.loads(result.report.read_text())
    assert merged["written"] == 7
    assert [s["path"] for s in merged["skipped"]] == ["a.mp4", "b.mp4", "c.mp4"]
    assert merged["partial"] == []


def test_merge_cli(files, tmp_path):
    out = tmp_path / "cli.beton"
    args = ["merge", str(files["k0"]), str(files["img"]), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "7 samples from 2 files" in result.stdout
    assert "warning:" in result.stderr and "orig_label" in result.stderr
    assert sorted(set(BetonFile(out).labels.tolist())) == [0, 1, 2, 3, 4]


def test_merge_cli_leaves_an_existing_out_alone_unless_overwrite(files, tmp_path):
    out = tmp_path / "out.beton"
    out.write_bytes(b"a file the user keeps")
    args = ["merge", str(files["k0"]), str(files["k1"]), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert f"{out} exists: pass --overwrite to replace it" in err
    assert out.read_bytes() == b"a file the user keeps"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.beton"]  # no report, no lock
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert _all(out) == _all(files["k0"]) + _all(files["k1"])


@pytest.mark.parametrize("bad", ["missing", "junk"])
def test_merge_cli_bad_input_is_one_line_exit_2(files, tmp_path, bad):
    path = tmp_path / f"{bad}.beton"
    if bad == "junk":
        path.write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["merge", str(files["k0"]), str(path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- damaged inputs


@pytest.fixture
def damaged(files, tmp_path) -> Path:
    """A copy of k.1.beton whose sample 1 has one flipped byte in its frame bytes."""
    bad = tmp_path / "k.1.damaged.beton"
    data = bytearray(files["k1"].read_bytes())
    row = BetonFile(files["k1"]).frames_meta[1]
    data[int(row["ptr"]) + int(row["size"]) - 3] ^= 0x5A
    bad.write_bytes(bytes(data))
    return bad


def test_merge_stops_at_a_damaged_sample_instead_of_resigning_it(files, damaged, tmp_path):
    out = tmp_path / "out.beton"
    with pytest.raises(BetonError, match=r"sample 1 \(kinetics400/k.1/1\) fails its CRC32"):
        merge([files["k0"], damaged], out)
    assert not out.exists() and not list(tmp_path.glob(".out.beton*"))
    result = runner.invoke(app, ["merge", str(files["k0"]), str(damaged), "-o", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--skip-damaged" in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


def test_merge_can_skip_damaged_samples_and_lists_them(files, damaged, tmp_path):
    out = tmp_path / "out.beton"
    result = merge([files["k0"], damaged], out, skip_damaged=True)
    assert [d["index"] for d in result.damaged] == [1] and result.damaged[0]["path"] == str(damaged)
    merged = BetonFile(out)
    assert len(merged) == 4 + 2
    assert all(merged.checksum_ok(i) for i in range(len(merged)))
    sources = [merged.meta(i)["source"] for i in range(len(merged))]
    assert "kinetics400/k.1/1" not in sources
    report = json.loads((tmp_path / "out.beton.report.json").read_text())
    assert report["damaged"][0]["source"] == "kinetics400/k.1/1"
