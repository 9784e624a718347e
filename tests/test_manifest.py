"""The class list stored in every .beton: written, read back without ffcv, kept by merge,
ignored by ffcv's readers, and compared between a training and a validation file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media import noise, sample_params, webp, write_mixed_folder

from vicmae_data import ClassMapError, check_same_classes, class_map, class_names
from vicmae_data.format import tables
from vicmae_data.format.beton import BetonError, BetonFile
from vicmae_data.format.manifest import Manifest, image_runs, merged_manifest
from vicmae_data.synth.dataset import synth_dataset
from vicmae_data.write.convert import convert
from vicmae_data.write.merge import merge


@pytest.fixture(scope="module")
def k700(tmp_path_factory) -> Path:
    """Kinetics-700 with both splits; val.csv lacks the class 'abseiling'."""
    root = tmp_path_factory.mktemp("k700")
    synth_dataset("kinetics700", root, videos=8, seed=4)
    csv_path = root / "annotations" / "val.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(x for x in lines if not x.startswith("abseiling")) + "\n")
    return root


@pytest.fixture(scope="module")
def splits(k700, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("k700_out")
    made = {}
    for split in ("train", "val"):
        made[split] = out / f"{split}.beton"
        convert("kinetics700", k700, made[split], split=split, workers=1, short_side=24)
    return made


def test_dtypes_are_ffcvs():
    """The layout the writer and the inspection commands declare without ffcv is ffcv's:
    dtypes, field type ids, and argument bytes (zero for each of the three fields)."""
    from ffcv.fields import IntField, JSONField
    from ffcv.types import (
        ALLOC_TABLE_TYPE,
        CURRENT_VERSION,
        TYPE_ID_HANDLER,
        FieldDescType,
        HeaderType,
        get_metadata_type,
    )

    from vicmae_data.format.frames import WebPFramesField

    fields = {"frames": WebPFramesField(), "label": IntField(), "meta": JSONField()}
    assert tables.HEADER == HeaderType and tables.FIELD_DESC == FieldDescType
    assert tables.ALLOC == ALLOC_TABLE_TYPE and tables.FORMAT_VERSION == CURRENT_VERSION
    assert tables.ALLOC.alignment == ALLOC_TABLE_TYPE.alignment  # the manifest's padding
    assert tables.METADATA == get_metadata_type(list(fields.values()))
    type_ids = {handler: type_id for type_id, handler in TYPE_ID_HANDLER.items()}
    assert [(name, type_ids.get(type(f), 255)) for name, f in fields.items()] == [
        (name, type_id) for name, type_id, _ in tables.FIELDS
    ]
    assert not any(np.any(f.to_binary()[0]) for f in fields.values())


def test_every_split_stores_the_datasets_one_class_list(splits):
    train, val = BetonFile(splits["train"]), BetonFile(splits["val"])
    assert train.manifest is not None and val.manifest is not None
    assert train.manifest.classes == val.manifest.classes
    assert "abseiling" in val.manifest.classes  # although no val sample has it
    assert class_names(splits["val"]) == dict(enumerate(train.manifest.classes))
    assert class_map(splits["train"])["air drumming"] == 1
    check_same_classes(splits["train"], splits["val"])  # no error
    for beton in (train, val):
        for i in range(len(beton)):
            meta = beton.meta(i)
            assert beton.manifest.classes[int(beton.labels[i])] == meta["class_name"]
            assert meta["kind"] == "video"
    source = train.manifest.sources[0]
    assert source["dataset"] == "kinetics700" and source["stop"] == len(train)
    report = json.loads(Path(f"{splits['val']}.report.json").read_text())
    assert report["classes"] == list(train.manifest.classes)


def test_ffcv_reader_and_loader_still_open_the_file(splits):
    from ffcv.reader import Reader

    from vicmae_data import make_loader
    from vicmae_data.format.beton import custom_fields

    reader = Reader(str(splits["train"]), custom_fields())
    beton = BetonFile(splits["train"])
    assert reader.num_samples == len(beton)
    assert np.array_equal(reader.metadata, beton.tables.metadata)
    assert np.array_equal(reader.alloc_table, beton.tables.alloc_table())
    for memory in ("mmap-bounded", "process_cache"):
        loader = make_loader(
            str(splits["train"]), 2, num_workers=1, resolution=16, memory=memory, seed=1
        )
        batch = next(iter(loader))
        assert batch.views.shape[:2] == (2, 2)
        assert set(batch.labels.tolist()) <= set(range(len(beton.manifest.classes)))


def test_different_class_lists_are_refused(splits, k700, tmp_path):
    # The same val split converted with the old rule (its own CSV's classes): every label
    # is shifted by one against train.
    other = tmp_path / "other"
    shutil.copytree(k700, other)
    (other / "annotations" / "train.csv").unlink()
    old_val = tmp_path / "old_val.beton"
    convert("kinetics700", other, old_val, split="val", workers=1, short_side=24)
    with pytest.raises(ClassMapError) as info:
        check_same_classes(splits["train"], old_val)
    message = str(info.value)
    assert "label 0" in message and "'abseiling'" in message and "\n" not in message


def test_merge_keeps_and_offsets_the_class_lists(splits, tmp_path):
    images = tmp_path / "in"
    synth_dataset("imagenet", images, videos=6, seed=2, splits=("train",))
    in1k = tmp_path / "in1k.beton"
    convert("imagenet", images, in1k, workers=1, short_side=24)
    shards = merge([splits["train"], splits["val"]], tmp_path / "shards.beton")
    assert BetonFile(shards.out).manifest.classes == BetonFile(splits["train"]).manifest.classes
    with pytest.warns(UserWarning):
        mixed = merge([splits["train"], in1k], tmp_path / "mixed.beton")
    m = BetonFile(mixed.out).manifest
    k = BetonFile(splits["train"]).manifest
    i = BetonFile(in1k).manifest
    assert m.classes == k.classes + i.classes
    assert m.title(len(k.classes)) == i.titles[0] == "tench, Tinca tinca"
    n = len(BetonFile(splits["train"]))
    assert m.images == ((n, n + len(BetonFile(in1k))),)
    assert [s["dataset"] for s in m.sources] == ["kinetics700", "imagenet"]
    assert m.sources[1]["label_offset"] == len(k.classes) and m.sources[1]["start"] == n


def test_damaged_manifest_is_named(splits, tmp_path):
    bad = tmp_path / "bad.beton"
    shutil.copy(splits["train"], bad)
    ptr = int(BetonFile(bad).tables.header["alloc_table_ptr"]) - 5
    with open(bad, "r+b") as fh:
        fh.seek(ptr)
        fh.write(b"XXXXX")
    with pytest.raises(BetonError, match="manifest"):
        BetonFile(bad).class_names()


def test_image_runs_and_merged_manifest_units():
    assert image_runs([]) == ()
    assert image_runs([True, True, False, True]) == ((0, 2), (3, 4))
    a = Manifest(("x", "y"), images=((0, 1),), sources=({"start": 0, "stop": 2},))
    merged = merged_manifest([a, a], [2, 2], [0, 0])
    assert merged.classes == ("x", "y") and merged.images == ((0, 1), (2, 3))
    assert merged_manifest([a, None], [2, 2], [0, 2]) is None
    assert list(Manifest.from_json(a.to_json()).image_flags(3)) == [True, False, False]
    # merge --skip-damaged keeps some rows: image runs and sources follow them.
    kept = merged.select([1, 2, 3])
    assert kept.images == ((1, 2),)
    assert [(s["start"], s["stop"]) for s in kept.sources] == [(0, 1), (1, 3)]


def test_inspection_reads_a_file_without_importing_ffcv_or_torch(splits):
    code = (
        "import sys; from vicmae_data.inspect.info import info; "
        f"s = info({str(splits['train'])!r}); "
        "bad = [m for m in ('ffcv', 'torch', 'numba', 'cv2') if m in sys.modules]; "
        "print(s.samples, bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]"), out.stdout


def test_info_counts_a_one_frame_video_as_a_video_and_shows_titles(tmp_path):
    from typer.testing import CliRunner

    from vicmae_cli.data import app
    from vicmae_data.inspect.info import info

    out = tmp_path / "f.beton"
    convert("folder", write_mixed_folder(tmp_path / "f", 32, 48), out, workers=1, short_side=24)
    summary = info(out)
    assert (summary.videos, summary.images) == (2, 1)
    beton = BetonFile(out)
    kinds = {beton.meta(i)["source"]: beton.meta(i)["kind"] for i in range(len(beton))}
    assert kinds == {"a/clip.mp4": "video", "a/one.mp4": "video", "a/still.png": "image"}

    images = tmp_path / "in"
    synth_dataset("imagenet", images, videos=6, seed=2, splits=("train",))
    in1k = tmp_path / "in1k.beton"
    convert("imagenet", images, in1k, workers=1, short_side=24)
    result = CliRunner().invoke(app, ["info", str(in1k)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "tench, Tinca tinca [n01440764]" in result.output
    assert "most common 24 x " in result.output
    data = json.loads(CliRunner().invoke(app, ["info", str(in1k), "--json"]).output)
    assert data["class_titles"]["0"] == "tench, Tinca tinca" and data["images"] == 6


def test_a_one_frame_video_is_loaded_as_a_video(tmp_path):
    from vicmae_data import make_loader

    out = tmp_path / "f.beton"
    convert("folder", write_mixed_folder(tmp_path / "f", 40, 48), out, workers=1, short_side=40)
    beton = BetonFile(out)
    kinds = [beton.meta(i)["kind"] == "image" for i in range(len(beton))]
    assert list(beton.image_flags()) == kinds == [False, False, True]
    loader = make_loader(str(out), 3, num_workers=1, resolution=16, drop_last=False, seed=3)
    batch = next(iter(loader))
    assert batch.is_image.tolist() == [kinds[i] for i in batch.indices.tolist()]
    # The one-frame video's crops come from the video scale range, the image's from the
    # image range: the decoder draws what sample_params says for each kind.
    decoder = loader.decoders[0]
    video = sample_params(decoder, 1, 1, 40, 48, 0, image=False)
    image = sample_params(decoder, 1, 1, 40, 48, 0, image=True)
    assert not np.array_equal(video, image)
    area = video[:, 3].astype(float) * video[:, 4] / (40 * 48)
    assert (area >= 0.5 - 0.05).all()  # video_scale (0.5, 1.0)


def test_the_decoder_crops_a_one_frame_video_with_the_video_range(tmp_path):

    import cv2

    from vicmae_data import make_loader
    from vicmae_data.format.beton import Sample
    from vicmae_data.format.frames import FrameList
    from vicmae_data.write.beton_writer import write_beton

    res, hw = 8, (40, 56)

    # Samples 0..3 are one-frame videos, 4..7 one-frame images (the manifest says which).
    samples = [
        Sample(FrameList([webp(noise(s, *hw), lossless=True)], *hw), s, {}) for s in range(8)
    ]
    manifest = Manifest(classes=tuple(f"c{i}" for i in range(8)), images=((4, 8),))
    path = tmp_path / "m.beton"
    write_beton(path, samples, manifest=manifest)
    loader = make_loader(str(path), 8, num_workers=1, resolution=res, seed=5)
    decoder = loader.decoders[0]
    batch = next(iter(loader))
    for row, s in enumerate(batch.indices.tolist()):
        image = s >= 4
        assert bool(batch.is_image[row]) == image
        params = sample_params(decoder, s, 1, *hw, 0, image=image)
        for v, (_, top, left, h, w, flip) in enumerate(params.tolist()):
            crop = noise(s, *hw)[top : top + h, left : left + w]
            # The loader's rule: bilinear below a 2x downscale, area from 2x on.
            method = cv2.INTER_AREA if max(h, w) / res >= 2 else cv2.INTER_LINEAR
            view = cv2.resize(crop, (res, res), interpolation=method)
            view = view[:, ::-1] if flip else view
            np.testing.assert_array_equal(batch.views[row, v].numpy(), view.transpose(2, 0, 1))
