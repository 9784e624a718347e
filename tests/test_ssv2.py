"""Something-Something v2 as it ships: the twin listed, converted and read back, bad files.

The twin writes the release's layout file for file (webm VP9 clips named by id in one
folder, the four JSON files under labels/), with class ids that are deliberately not the
templates' alphabetical order, so only a reader of the labels file's ids passes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data import UnlabelledError, check_same_classes, require_labels, verify
from vicmae_data.format.beton import BetonFile
from vicmae_data.inspect.info import info
from vicmae_data.sources.layouts import UNLABELLED, LayoutError, list_items
from vicmae_data.sources.ssv2 import LABELS, SPLIT_FILES, SSV2_TEMPLATES, VIDEOS, template_key
from vicmae_data.synth.dataset import SynthSummary, synth_dataset
from vicmae_data.write.convert import convert

runner = CliRunner()
CLIPS = 6  # per split: every template once


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> SynthSummary:
    root = tmp_path_factory.mktemp("ssv2")
    return synth_dataset("ssv2", root, videos=CLIPS, seed=2, splits=("train", "val", "test"))


def _copy(twin: SynthSummary, tmp_path: Path) -> Path:
    return shutil.copytree(twin.root, tmp_path / "ssv2")


def test_twin_is_the_shipped_layout(twin):
    root = twin.root
    assert sorted(p.name for p in (root / "labels").iterdir()) == [
        "something-something-v2-labels.json",
        "something-something-v2-test.json",
        "something-something-v2-train.json",
        "something-something-v2-validation.json",
    ]
    clips = sorted((root / VIDEOS).iterdir())
    assert len(clips) == 3 * CLIPS and all(p.suffix == ".webm" for p in clips)
    with av.open(str(clips[0])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "vp9" and stream.average_rate == 12
    labels = json.loads((root / LABELS).read_text())
    assert all(isinstance(v, str) for v in labels.values())  # ids are strings, as shipped
    assert sorted(labels, key=lambda k: int(labels[k])) == list(twin.classes)
    assert list(twin.classes) != sorted(twin.classes)  # a reader that sorts is caught
    train = json.loads((root / SPLIT_FILES["train"]).read_text())
    assert set(train[0]) == {"id", "label", "template", "placeholders"}
    assert "[" in train[0]["template"] and isinstance(train[0]["id"], str)
    test = json.loads((root / SPLIT_FILES["test"]).read_text())
    assert all(set(entry) == {"id"} for entry in test)


@pytest.mark.parametrize("split", ["train", "val", "validation", "test"])
def test_listing_gives_the_labels_drawn(twin, split):
    listing = list_items("ssv2", twin.root, split)
    ours = "val" if split == "validation" else split
    assert listing.split == ours and listing.classes == list(twin.classes)
    want = {i.path: (i.label, i.class_name) for i in twin.written(ours)}
    assert {i.source: (i.label, i.class_name) for i in listing.items} == want
    assert listing.labelled == (ours != "test")
    if ours == "test":
        assert {i.label for i in listing.items} == {UNLABELLED}
    else:
        assert all(listing.classes[i.label] == i.class_name for i in listing.items)


def test_brackets_only_are_removed_from_templates():
    keys = {template_key(t) for t, _, _ in SSV2_TEMPLATES}
    assert "Putting number of something onto something" in keys
    assert "Putting something, something and something on the table" in keys
    assert "Poking something so lightly that it doesn't or almost doesn't move" in keys


def test_integer_ids_and_missing_clips(twin, tmp_path):
    root = _copy(twin, tmp_path)
    path = root / SPLIT_FILES["val"]
    entries = json.loads(path.read_text())
    for entry in entries:
        entry["id"] = int(entry["id"])  # some copies of the release carry numbers
    entries.append(dict(entries[0], id=999999))  # annotated, not on disk
    path.write_text(json.dumps(entries))
    listing = list_items("ssv2", root, "val")
    assert len(listing.items) == CLIPS
    assert listing.missing == [
        {"path": str(root / VIDEOS / "999999.webm"), "reason": "missing on disk"}
    ]


def _error(root: Path, split: str = "train") -> str:
    with pytest.raises(LayoutError) as caught:
        list_items("ssv2", root, split)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_bad_annotation_files_are_one_line_errors(twin, tmp_path):
    root = _copy(twin, tmp_path)
    labels = root / LABELS
    good = labels.read_text()
    labels.write_text(good[: len(good) // 2])  # cut short
    assert str(labels) in _error(root) and "not valid JSON" in _error(root)
    labels.write_text(json.dumps(["Holding something"]))
    assert str(labels) in _error(root)
    labels.write_text(json.dumps({"Holding something": "one"}))
    assert "not an integer" in _error(root)
    labels.write_text(json.dumps({"a": "0", "b": "2"}))
    assert "without gaps" in _error(root)
    labels.write_text(good)

    train = root / SPLIT_FILES["train"]
    entries = json.loads(train.read_text())
    train.write_text(json.dumps([*entries, {"label": "x", "template": "Holding [something]"}]))
    assert str(train) in _error(root) and "no usable id" in _error(root)
    train.write_text(json.dumps([*entries, dict(entries[0], template="Juggling [something]")]))
    assert "'Juggling [something]' is not in something-something-v2-labels.json" in _error(root)
    train.unlink()
    assert f"annotation file {train} not found" in _error(root)
    shutil.rmtree(root / VIDEOS)
    assert str(root / VIDEOS) in _error(root, "val")
    assert "unknown split" in _error(root, "holdout")


def test_converts_every_split_with_its_labels(twin, tmp_path):
    betons = {}
    for split in ("train", "val", "test"):
        out = betons[split] = tmp_path / f"{split}.beton"
        report = convert("ssv2", twin.root, out, split=split, workers=1, short_side=24)
        assert report.written == CLIPS and report.skipped == []
        beton = BetonFile(out)
        assert beton.manifest.classes == twin.classes
        drawn = {i.path: i.label for i in twin.written(split)}
        for k in range(len(beton)):
            meta = beton.meta(k)
            assert int(beton.labels[k]) == drawn[meta["source"]]
            assert meta["num_frames"] == 12 and meta["height"] == 24
    check_same_classes(betons["train"], betons["val"])
    check_same_classes(betons["train"], betons["test"])  # one class list, labels or not
    require_labels(betons["val"])
    with pytest.raises(UnlabelledError, match=r"6 unlabelled samples \(ssv2 test"):
        require_labels(betons["test"])
    summary = info(betons["test"])
    assert summary.unlabelled == CLIPS and summary.class_counts == {}
    assert summary.class_names == {}  # label -1 names no class (not the last one)
    assert verify(betons["test"]).bad == ()


def test_truncated_clip_is_skipped_and_reported(twin, tmp_path):
    root = _copy(twin, tmp_path)
    victim = sorted((root / VIDEOS).iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:64])
    split = next(i.split for i in twin.items if i.path.endswith(victim.name))
    report = convert("ssv2", root, tmp_path / "x.beton", split=split, workers=1, short_side=24)
    assert report.written == CLIPS - 1
    assert [Path(s["path"]).name for s in report.skipped] == [victim.name]


def test_cli_converts_test_split_and_names_the_files_in_help(twin, tmp_path):
    out = tmp_path / "test.beton"
    args = ["convert", "ssv2", "--root", str(twin.root), "--split", "test", "--out", str(out)]
    result = runner.invoke(app, [*args, "--workers", "1"])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["info", str(out)])
    assert "unlabelled" in shown.output and f"{CLIPS} samples (label -1" in shown.output
    help_text = runner.invoke(app, ["convert", "--help"], env={"COLUMNS": "200"}).output
    assert "20bn-something-something-v2/<id>.webm" in help_text
    assert "val (reads something-something-v2-validation.json)" in help_text
    bad = runner.invoke(app, ["convert", "ssv2", "--root", str(tmp_path), "--out", str(out)])
    assert bad.exit_code == 2 and "something-something-v2-labels.json" in bad.stderr
    assert "Traceback" not in bad.output
