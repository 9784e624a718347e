"""`list_items`: each dataset's layout as it ships, read back with the labels synth drew."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vicmae_data.sources.items import MISSING
from vicmae_data.sources.layouts import DATASETS, LayoutError, list_items
from vicmae_data.sources.scan import AnnotatedFiles, Scanner
from vicmae_data.synth.dataset import LAYOUTS, SynthSummary, synth_dataset

VIDEOS = 8  # per split: every class of every layout at least once


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, SynthSummary]:
    base = tmp_path_factory.mktemp("layouts")
    return {
        layout: synth_dataset(layout, base / layout, videos=VIDEOS, seed=1, missing=2)
        for layout in LAYOUTS
    }


def _root(summary: SynthSummary, split: str) -> Path:
    # The folder reader's root is the class tree; synth writes one per split.
    return summary.root / split if summary.layout == "folder" else summary.root


def _source(summary: SynthSummary, path: str) -> str:
    return path.split("/", 1)[1] if summary.layout == "folder" else path


def test_datasets_and_layouts_agree():
    assert DATASETS == LAYOUTS


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_listing_matches_what_synth_wrote(made, layout, split):
    summary = made[layout]
    listing = list_items(layout, _root(summary, split), split)
    assert (listing.dataset, listing.split) == (layout, split)
    assert listing.classes == list(summary.classes)
    want = {
        _source(summary, i.path): (i.label, i.class_name, i.kind) for i in summary.written(split)
    }
    got = {i.source: (i.label, i.class_name, i.kind) for i in listing.items}
    assert got == want
    assert [i.source for i in listing.items] == sorted(got)
    for item in listing.items:
        assert item.path.is_file()
        assert item.path == listing.root / item.source
        assert listing.classes[item.label] == item.class_name
    gone = {str(summary.root / i.path) for i in summary.items if i.split == split and not i.on_disk}
    assert {m["path"] for m in listing.missing} == gone
    assert all(m["reason"] == "missing on disk" for m in listing.missing)
    if layout in ("kinetics400", "mit"):
        assert len(gone) == 2


def test_kinetics_flat_and_nested_give_the_same_labels(tmp_path):
    nested = synth_dataset("kinetics400", tmp_path / "n", videos=6, flat=False, splits=("train",))
    flat = synth_dataset("kinetics400", tmp_path / "f", videos=6, flat=True, splits=("train",))
    a = list_items("kinetics400", nested.root)
    b = list_items("kinetics400", flat.root)
    assert all(i.source.count("/") == 2 for i in a.items)
    assert all(i.source.count("/") == 1 for i in b.items)
    assert sorted((Path(i.source).name, i.label) for i in a.items) == sorted(
        (Path(i.source).name, i.label) for i in b.items
    )


def test_kinetics_clip_deleted_from_disk_is_reported(made, tmp_path):
    root = shutil.copytree(made["kinetics700"].root, tmp_path / "k700")
    before = list_items("kinetics700", root, "val")
    victim = before.items[3]
    victim.path.unlink()
    after = list_items("kinetics700", root, "val")
    assert len(after.items) == len(before.items) - 1
    assert {"path": str(victim.path), "reason": "missing on disk"} in after.missing
    assert after.classes == before.classes  # still annotated, so still a class


def test_kinetics_csv_variants(tmp_path):
    # Quoted labels, an is_cc column, CRLF endings, a duplicate row, a float time and a
    # clip sitting in another label's folder: the annotation decides the label.
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.csv").write_bytes(
        b"label,youtube_id,time_start,time_end,split,is_cc\r\n"
        b'"riding a bike",aaaaaaaaaaa,5,15,train,0\r\n'
        b"abseiling,bbbbbbbbbbb,0,10,train,1\r\n"
        b"abseiling,bbbbbbbbbbb,0,10,train,1\r\n"
        b'"zumba",ccccccccccc,12.0,22.0,train,0\r\n'
    )
    for rel in (
        "train/riding a bike/aaaaaaaaaaa_000005_000015.mp4",
        "train/zumba/bbbbbbbbbbb_000000_000010.mp4",
        "train/ccccccccccc_000012_000022.mp4",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    listing = list_items("kinetics600", tmp_path)
    assert listing.classes == ["abseiling", "riding a bike", "zumba"]
    assert [(i.source, i.label) for i in listing.items] == [
        ("train/ccccccccccc_000012_000022.mp4", 2),
        ("train/riding a bike/aaaaaaaaaaa_000005_000015.mp4", 1),
        ("train/zumba/bbbbbbbbbbb_000000_000010.mp4", 0),
    ]
    assert listing.missing == []


def test_kinetics_labels_come_from_every_shipped_csv(made, tmp_path):
    # A class missing from val.csv must not shift the labels of the others in val against
    # train: both index the sorted union of every shipped CSV's classes.
    root = shutil.copytree(made["kinetics700"].root, tmp_path / "k700")
    csv_path = root / "annotations" / "val.csv"
    text = csv_path.read_text()
    csv_path.write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("abseiling"))
    )
    # test.csv ships without labels in Kinetics-700: it is read for nothing.
    (root / "annotations" / "test.csv").write_text("youtube_id,time_start,time_end,split\n")
    val = list_items("kinetics700", root, "val")
    train = list_items("kinetics700", root, "train")
    assert "abseiling" not in {i.class_name for i in val.items}
    assert val.classes == train.classes == sorted(train.classes)
    assert "abseiling" in val.classes
    assert all(val.classes[i.label] == i.class_name for i in val.items)
    # A class only the test CSV names is part of the class list too.
    (root / "annotations" / "test.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nzz new class,aaaaaaaaaaa,0,10,test\n"
    )
    assert list_items("kinetics700", root, "train").classes == [*train.classes, "zz new class"]


def test_mit_indices_come_from_categories_file(made):
    listing = list_items("mit", made["mit"].root, "val")
    assert listing.classes == ["barking", "clapping", "applauding", "running", "bicycling"]
    assert all(i.source.startswith("validation/") for i in listing.items)
    assert {i.class_name: i.label for i in listing.items}["barking"] == 0


def test_imagenet_quirk_files_are_listed(made):
    listing = list_items("imagenet", made["imagenet"].root, "train")
    odd = [i for i in made["imagenet"].items if i.codec in ("PNG", "JPEG-CMYK", "JPEG-L")]
    assert len(odd) == 3
    assert {i.path for i in odd} <= {i.source for i in listing.items}
    assert all(i.source.endswith(".JPEG") and i.kind == "image" for i in listing.items)


def test_imagenet_class_order_from_mapping_else_sorted(made, tmp_path):
    root = shutil.copytree(made["imagenet"].root, tmp_path / "in")
    mapping = root / "LOC_synset_mapping.txt"
    lines = mapping.read_text().splitlines()
    mapping.write_text("\n".join(reversed(lines)) + "\n")
    listing = list_items("imagenet", root, "val")
    assert listing.classes == sorted(listing.classes, reverse=True)
    for item in listing.items:
        assert listing.classes[item.label] == item.class_name
    mapping.unlink()
    assert list_items("imagenet", root, "train").classes == sorted(listing.classes)


def test_imagenet_val_in_wnid_folders(tmp_path):
    summary = synth_dataset("imagenet", tmp_path, videos=6, flat=False, splits=("val",))
    assert not (tmp_path / "LOC_val_solution.csv").exists()
    listing = list_items("imagenet", tmp_path, "validation")
    assert {i.source: i.label for i in listing.items} == {
        i.path: i.label for i in summary.written("val")
    }


def test_imagenet_flat_val_missing_image_reported(made, tmp_path):
    root = shutil.copytree(made["imagenet"].root, tmp_path / "in")
    next((root / "val").glob("*.JPEG")).unlink()
    listing = list_items("imagenet", root, "val")
    assert len(listing.items) == VIDEOS - 1 and len(listing.missing) == 1


def test_folder_skips_clutter_and_reads_nested_media(made, tmp_path):
    root = shutil.copytree(made["folder"].root / "train", tmp_path / "f")
    (root / "cats" / "notes.txt").write_text("not media")
    (root / "cats" / ".hidden.mp4").write_bytes(b"")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.mp4").write_bytes(b"")
    (root / "dogs" / "more").mkdir()
    (root / "dogs" / "more" / "CLIP.MOV").write_bytes(b"")
    listing = list_items("folder", root)
    names = {i.source for i in listing.items}
    assert listing.classes == ["cats", "dogs", "horses", "zebras"]
    assert "dogs/more/CLIP.MOV" in names
    assert not any(
        n.endswith(("notes.txt", ".DS_Store", "README.txt", ".hidden.mp4")) for n in names
    )
    assert len(listing.items) == VIDEOS + 1
    kinds = {i.kind for i in listing.items}
    assert kinds == {"image", "video"}


def _one_line_error(dataset: str, root: Path, split: str = "train", match: str = "") -> str:
    with pytest.raises(LayoutError) as info:
        list_items(dataset, root, split)
    message = str(info.value)
    assert "\n" not in message and match in message
    return message


def test_errors_name_the_path(made, tmp_path):
    _one_line_error("kinetics400", tmp_path / "nope", match=str(tmp_path / "nope"))
    _one_line_error("kinetics401", tmp_path, match="unknown dataset")
    _one_line_error("kinetics400", tmp_path, match=str(tmp_path / "annotations" / "train.csv"))
    _one_line_error("mit", made["mit"].root, "test", match="unknown split")

    (tmp_path / "annotations").mkdir()
    bad = tmp_path / "annotations" / "train.csv"
    bad.write_text("name,id\nabseiling,x\n")
    _one_line_error("kinetics400", tmp_path, match="header")
    bad.write_text("label,youtube_id,time_start,time_end,split\nabseiling,x,five,15,train\n")
    _one_line_error("kinetics400", tmp_path, match="line 2")
    bad.write_bytes(b"label,youtube_id,time_start,time_end\n\xff\xfe\x00bad\n")
    _one_line_error("kinetics400", tmp_path, match=str(bad))


def test_mit_bad_annotations(made, tmp_path):
    root = shutil.copytree(made["mit"].root, tmp_path / "mit")
    with open(root / "trainingSet.csv", "a") as f:
        f.write("dancing/yt-x.mp4,dancing,3,4\n")
    _one_line_error("mit", root, match="trainingSet.csv")
    (root / "moments_categories.txt").write_text("barking,0\nclapping,2\n")
    _one_line_error("mit", root, match="without gaps")
    (root / "moments_categories.txt").unlink()
    _one_line_error("mit", root, match="moments_categories.txt")


def test_symlink_loops_are_listed_once_and_reported(made, tmp_path):
    root = shutil.copytree(made["folder"].root / "train", tmp_path / "f")
    before = list_items("folder", root)
    (root / "zloop").symlink_to(".")  # a loop at the top: would be a bogus class
    (root / "cats" / "up").symlink_to("..")  # a loop inside a class
    (root / "kitties").symlink_to("cats")  # a second link to one folder
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(next((root / "dogs").iterdir()), outside / "extra.mp4")
    (root / "dogs" / "linked").symlink_to(outside)  # a link out of the root is followed once
    listing = list_items("folder", root)
    assert listing.classes == before.classes
    assert {i.source for i in listing.items} == {i.source for i in before.items} | {
        "dogs/linked/extra.mp4"
    }
    reported = {Path(m["path"]).name for m in listing.skipped}
    assert reported == {"zloop", "up", "kitties"}
    assert all("already listed" in m["reason"] for m in listing.skipped)


def test_mit_rows_that_leave_the_root_are_skipped_and_reported(made, tmp_path):
    root = shutil.copytree(made["mit"].root, tmp_path / "mit")
    secret = tmp_path / "secret.mp4"
    shutil.copy(next(root.glob("training/*/*.mp4")), secret)
    before = list_items("mit", root)
    with open(root / "trainingSet.csv", "a") as f:
        f.write("../../secret.mp4,barking,3,4\n/etc/passwd.mp4,barking,3,4\n")
    listing = list_items("mit", root)
    assert [i.source for i in listing.items] == [i.source for i in before.items]
    assert {m["path"] for m in listing.skipped} == {"../../secret.mp4", "/etc/passwd.mp4"}
    assert all("leaves the dataset root" in m["reason"] for m in listing.skipped)


def test_imagenet_titles_from_synset_mapping(made, tmp_path):
    root = made["imagenet"].root
    listing = list_items("imagenet", root, "val")
    lines = (root / "LOC_synset_mapping.txt").read_text().splitlines()
    assert listing.titles == [line.split(" ", 1)[1] for line in lines]
    assert listing.classes == [line.split(" ", 1)[0] for line in lines]
    # No mapping: every split indexes the wnid folders of train/.
    copy = shutil.copytree(root, tmp_path / "in")
    (copy / "LOC_synset_mapping.txt").unlink()
    assert list_items("imagenet", copy, "val").classes == list_items("imagenet", copy).classes


def test_annotated_files_count_once_skip_outside_and_list_missing(tmp_path):
    """What Moments in Time's and Places365's readers share: a file named twice is one
    item, a path leaving the root is skipped with its reason, an absent one is missing."""
    (tmp_path / "media" / "a").mkdir(parents=True)
    (tmp_path / "media" / "a" / "x.mp4").write_bytes(b"")
    scan = Scanner(tmp_path)
    files = AnnotatedFiles(tmp_path, "media", scan)
    for rel in ("a/x.mp4", "a/x.mp4", "a/y.mp4", "../z.mp4"):
        files.add(rel, 3, "c")
    assert [(i.path, i.label, i.class_name, i.source) for i in files.items] == [
        (tmp_path / "media" / "a" / "x.mp4", 3, "c", "media/a/x.mp4")
    ]
    assert files.missing == [{"path": str(tmp_path / "media" / "a" / "y.mp4"), "reason": MISSING}]
    assert [s["path"] for s in scan.skipped] == ["../z.mp4"]
