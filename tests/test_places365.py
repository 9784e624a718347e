"""Places365-Standard as distributed: the twin listed, converted and read back, bad files.

The twin's category indices are deliberately not the names' alphabetical order (the
release's are), so only a reader of ``categories_places365.txt``'s indices passes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data import check_same_classes
from vicmae_data.format.beton import BetonFile
from vicmae_data.sources.layouts import LayoutError, list_items
from vicmae_data.sources.places365 import CATEGORIES, SPLIT_FILES, title
from vicmae_data.synth.dataset import SynthSummary, synth_dataset
from vicmae_data.write.convert import convert

runner = CliRunner()
IMAGES = 5  # per split: every category once


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SynthSummary:
    return synth_dataset("places365", tmp_path_factory.mktemp("p"), videos=IMAGES, missing=1)


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> SynthSummary:
    root = tmp_path_factory.mktemp("pl")
    return synth_dataset("places365", root, videos=IMAGES, seed=1, variant="large")


def test_twin_is_the_distributed_layout(small, large):
    root = small.root
    assert sorted(p.name for p in root.iterdir()) == [
        "categories_places365.txt",
        "data_256",
        "places365_train_standard.txt",
        "places365_val.txt",
        "val_256",
    ]
    first = (root / SPLIT_FILES["train"]).read_text().splitlines()[0]
    image, _ = first.split()
    assert image.startswith("/") and (root / "data_256" / image[1:]).is_file()
    val = (root / SPLIT_FILES["val"]).read_text().splitlines()[0]
    assert val.startswith("Places365_val_00000001.jpg ")
    assert any(c.count("/") == 3 for c in small.classes)  # "/b/bakery/shop"
    assert list(small.classes) != sorted(small.classes)
    with Image.open(root / "data_256" / image[1:]) as im:
        assert (im.format, im.size) == ("JPEG", (32, 32))
    assert {p.name for p in large.root.iterdir()} >= {"data_large", "val_large"}


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("variant", ["small", "large"])
def test_listing_gives_the_labels_drawn(small, large, split, variant):
    twin = small if variant == "small" else large
    listing = list_items("places365", twin.root, split)  # the variant on disk
    assert listing.variant == variant and listing.image_dataset
    assert listing.classes == list(twin.classes)
    assert listing.titles == [title(c) for c in twin.classes]
    want = {i.path: (i.label, i.class_name, "image") for i in twin.written(split)}
    assert {i.source: (i.label, i.class_name, i.kind) for i in listing.items} == want
    gone = {str(twin.root / i.path) for i in twin.items if i.split == split and not i.on_disk}
    assert {m["path"] for m in listing.missing} == gone


def test_titles_drop_the_letter():
    assert title("/b/bakery/shop") == "bakery/shop" and title("/a/airfield") == "airfield"


def test_torchvisions_renamed_train_folder_is_read(small, tmp_path):
    root = shutil.copytree(small.root, tmp_path / "p")
    (root / "data_256").rename(root / "data_256_standard")  # what Places365(download=True) leaves
    listing = list_items("places365", root, "train", variant="small")
    assert len(listing.items) == IMAGES
    assert all(i.source.startswith("data_256_standard/") for i in listing.items)


def _error(root: Path, split: str = "train", variant: str | None = None) -> str:
    with pytest.raises(LayoutError) as caught:
        list_items("places365", root, split, variant)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_bad_layouts_are_one_line_errors(small, large, tmp_path):
    root = shutil.copytree(small.root, tmp_path / "p")
    shutil.copytree(large.root / "data_large", root / "data_large")
    assert "choose one with --variant small|large" in _error(root)
    assert len(list_items("places365", root, "train", "large").items) == IMAGES
    assert "unknown variant 'huge'" in _error(root, variant="huge")
    assert "expected val_large/" in _error(root, "val", "large")

    categories = root / CATEGORIES
    good = categories.read_text()
    categories.write_text(good.replace("/c/campus 4", "campus 4"))
    assert str(categories) in _error(root, "val") and "line 3" in _error(root, "val")
    categories.write_text(good.replace("/c/campus 4", "/c/campus 3"))
    assert "index 3 is given twice" in _error(root, "val")
    categories.write_text(good)
    files = root / SPLIT_FILES["val"]
    files.write_text(files.read_text() + "Places365_val_00000099.jpg 365\n")
    assert str(files) in _error(root, "val") and "Places365_val_00000099.jpg 365" in _error(
        root, "val"
    )
    files.unlink()
    assert f"annotation file {files} not found" in _error(root, "val")


def test_converts_with_labels_classes_and_titles(small, tmp_path):
    betons = {}
    for split in ("train", "val"):
        out = betons[split] = tmp_path / f"{split}.beton"
        report = convert("places365", small.root, out, split=split, workers=1, short_side=24)
        assert report.written == IMAGES and len(report.missing) == 1 and report.skipped == []
        beton = BetonFile(out)
        assert beton.manifest.classes == small.classes
        assert beton.manifest.titles == tuple(title(c) for c in small.classes)
        assert beton.manifest.image_flags(len(beton)).all()
        drawn = {i.path: i.label for i in small.written(split)}
        for k in range(len(beton)):
            meta = beton.meta(k)
            assert int(beton.labels[k]) == drawn[meta["source"]] and meta["kind"] == "image"
    check_same_classes(betons["train"], betons["val"])


def test_truncated_image_is_skipped_and_reported(small, tmp_path):
    root = shutil.copytree(small.root, tmp_path / "p")
    victim = sorted((root / "val_256").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])
    report = convert("places365", root, tmp_path / "v.beton", split="val", workers=1)
    assert report.written == IMAGES - 1
    assert [Path(s["path"]).name for s in report.skipped] == [victim.name]


def test_cli_variant_and_help(large, tmp_path):
    out = tmp_path / "val.beton"
    args = ["convert", "places365", "--root", str(large.root), "--split", "val", "--out", str(out)]
    result = runner.invoke(app, [*args, "--variant", "large", "--workers", "1"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(app, [*args, "--variant", "small"])
    assert bad.exit_code == 2 and "expected val_256/" in bad.stderr
    help_text = runner.invoke(app, ["convert", "--help"], env={"COLUMNS": "200"}).output
    assert "--variant small | large" in help_text and "categories_places365.txt" in help_text
