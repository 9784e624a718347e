"""A split that ships without labels (SSv2's test): label -1, marked in the manifest, and
every tool that reads labels (info, verify, merge, the loader) keeps it -1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from media import noise, webp

from vicmae_data import UnlabelledError, make_loader, require_labels, verify
from vicmae_data.format.beton import BetonFile, Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.inspect.info import info
from vicmae_data.sources.items import UNLABELLED
from vicmae_data.write.assemble import file_manifest
from vicmae_data.write.beton_writer import write_beton
from vicmae_data.write.merge import MergeWarning, merge

N = 8


def _write(path: Path, dataset: str, classes: list[str], labels: list[int], labelled=True):
    """A .beton as the converter writes it: samples, and the manifest of one split."""
    samples = []
    for i, label in enumerate(labels):
        meta = {"source": f"{dataset}/{i}", "dataset": dataset, "kind": "video",
                "class_name": classes[label] if label >= 0 else "", "num_classes": len(classes),
                "num_frames": 2, "height": 24, "width": 32}  # fmt: skip
        samples.append(
            Sample(
                FrameList([webp(noise(i, 24, 32)), webp(noise(i + 99, 24, 32))], 24, 32),
                label,
                meta,
            )
        )
    headers = [{"meta": s.meta} for s in samples]
    manifest = file_manifest(dataset, "x", classes, [], headers, labelled=labelled)
    return write_beton(path, samples, manifest=manifest)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("unlabelled")
    classes = ["a", "b", "c"]
    return {
        "places": _write(d / "places.beton", "places365", ["p0", "p1"], [i % 2 for i in range(N)]),
        "test": _write(d / "test.beton", "ssv2", classes, [UNLABELLED] * N, labelled=False),
        "train": _write(d / "train.beton", "ssv2", classes, [i % 3 for i in range(N)]),
    }


def test_the_manifest_marks_the_split_and_info_counts_it(files):
    manifest = BetonFile(files["test"]).manifest
    assert manifest.unlabelled and not manifest.labelled_flags(N).any()
    assert not BetonFile(files["train"]).manifest.unlabelled
    summary = info(files["test"])
    assert summary.unlabelled == N and summary.classes_used == 0
    assert summary.class_names == {} and summary.num_classes == 3


def test_verify_accepts_minus_one_only_where_the_split_ships_no_labels(files, tmp_path):
    assert verify(files["test"]).bad == ()
    wrong = _write(tmp_path / "w.beton", "ssv2", ["a"], [UNLABELLED, 0], labelled=False)
    assert [b.reason for b in verify(wrong).bad] == [
        "label 0 on a sample of a split that ships without labels"
    ]
    lost = _write(tmp_path / "l.beton", "ssv2", ["a", "b"], [0, UNLABELLED])
    assert [b.index for b in verify(lost).bad] == [1]


def test_require_labels_refuses_in_one_line(files):
    require_labels(files["train"])
    with pytest.raises(UnlabelledError) as caught:
        require_labels(files["test"])
    assert "\n" not in str(caught.value) and str(files["test"]) in str(caught.value)


def test_merge_keeps_the_unlabelled_unlabelled(files, tmp_path):
    # ssv2 is offset past places365's 2 classes: its labels move, its -1 must not.
    out = tmp_path / "mixed.beton"
    with pytest.warns(MergeWarning, match="offset per file"):
        result = merge([files["places"], files["train"], files["test"]], out)
    assert result.plan.offsets == (0, 2, 2)
    labels = np.asarray(BetonFile(out).labels)
    assert labels[:N].tolist() == [i % 2 for i in range(N)]
    assert labels[N : 2 * N].tolist() == [2 + i % 3 for i in range(N)]
    assert labels[2 * N :].tolist() == [UNLABELLED] * N
    assert verify(out).bad == ()
    assert info(out).unlabelled == N
    with pytest.raises(UnlabelledError):
        require_labels(out)


def test_the_loader_keeps_the_unlabelled_unlabelled(files):
    loader = make_loader(
        [files["places"], (files["test"], 1.0)], 4, num_workers=1, resolution=16, seed=0
    )
    assert loader.label_offsets == (0, 2)
    seen = {0: set(), 1: set()}
    for batch in loader:
        for f in (0, 1):
            seen[f] |= set(batch.labels[batch.files == f].tolist())
        assert batch.labels.dtype == torch.int64
    assert seen == {0: {0, 1}, 1: {UNLABELLED}}
