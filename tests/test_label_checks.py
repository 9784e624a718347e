"""Labels are checked against the stored class list before a job trains (issue 19, item 3).

The issue's repro: a .beton with label 1,000,000 (which ``verify`` flags) made ``linprobe``
build a 1,000,001-class head and write 780 MB of checkpoints; label -5 was a 120-line
IndexError. Real files with a stored class list (as the converter writes them), the real
CLI, before any run folder exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from media import make_tiny_beton
from typer.testing import CliRunner

from vicmae.engine.evaluation import count_classes
from vicmae_cli.train import app
from vicmae_data import LabelError, UnlabelledError, check_labels
from vicmae_data.format.beton import BetonFile, Sample
from vicmae_data.sources.items import UNLABELLED
from vicmae_data.write.assemble import file_manifest
from vicmae_data.write.beton_writer import write_beton

runner = CliRunner()
EVAL = [
    "model.random_init=true", "model.arch=vit_pico_patch8", "data.resolution=32",
    "optim.batch_size=4",
    "optim.epochs=1", "data.num_workers=1", "run.progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return make_tiny_beton(tmp_path_factory.mktemp("labels") / "clips.beton", n=8)


def _relabelled(
    clips: Path, out: Path, labels: list[int], dataset: str = "test", labelled: bool = True
) -> Path:
    """The clips of ``clips`` with ``labels``, and the class list of a 2-class dataset
    stored in the file (as a conversion stores it)."""
    src = BetonFile(clips)
    samples = [
        Sample(src.sample(i).frames, label, dict(src.meta(i), dataset=dataset))
        for i, label in enumerate(labels)
    ]
    headers = [{"meta": s.meta} for s in samples]
    manifest = file_manifest(dataset, "train", ["class0", "class1"], [], headers, labelled)
    return write_beton(out, samples, manifest=manifest)


def _refused(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert all(n in text for n in needles), text


@pytest.mark.parametrize("label", [1_000_000, 2, -5])
@pytest.mark.parametrize("job", ["linprobe", "finetune"])
def test_a_label_outside_the_class_list_stops_the_job_naming_the_sample(
    clips, tmp_path, job, label
):
    labels = [0, 1, 0, label, 0, 1, 0, 1]
    bad = _relabelled(clips, tmp_path / "bad.beton", labels)
    good = _relabelled(clips, tmp_path / "good.beton", [i % 2 for i in range(8)])
    out = tmp_path / "run"
    for train, val in ((bad, good), (good, bad)):
        res = runner.invoke(
            app,
            ["train", job, "-b", str(train), "--val-beton", str(val), "--out", str(out), *EVAL],
        )
        _refused(res, f"{bad}: sample 3 (clip3) has label {label}, not one of its 2 classes")
        assert not out.exists()  # nothing written: no run folder, no checkpoint


def test_an_unlabelled_split_is_refused_for_training(clips, tmp_path):
    test = _relabelled(clips, tmp_path / "test.beton", [UNLABELLED] * 8, labelled=False)
    res = runner.invoke(
        app, ["train", "linprobe", "-b", str(test), "--out", str(tmp_path / "run"), *EVAL]
    )
    _refused(res, "test.beton holds 8 unlabelled samples", "ships without labels")
    with pytest.raises(UnlabelledError):
        check_labels(test)


def test_the_head_is_the_stored_class_list_and_covers_every_training_file(clips, tmp_path):
    # A class no sample uses still has its output (the dataset's list, not max label + 1).
    only_zero = _relabelled(clips, tmp_path / "zero.beton", [0] * 8)
    assert check_labels(only_zero) == 2 and count_classes(str(only_zero), None) == 2
    # Two datasets mixed: the loader offsets the second past the first, so does the head.
    other = _relabelled(clips, tmp_path / "other.beton", [i % 2 for i in range(8)], "other")
    assert count_classes([str(only_zero), str(other)], None) == 4
    # Shards of one dataset share their labels.
    shard = _relabelled(clips, tmp_path / "shard.beton", [1] * 8)
    assert count_classes([str(only_zero), str(shard)], None) == 2


def test_a_file_without_a_class_list_is_checked_as_far_as_it_can_be(clips, tmp_path):
    assert check_labels(clips) == 2  # the largest label + 1, with a warning
    with pytest.raises(LabelError, match=r"sample 0 \(clip0\) has label -5, below 0"):
        check_labels(_relabelled_no_list(clips, tmp_path / "neg.beton"))


def _relabelled_no_list(clips: Path, out: Path) -> Path:
    src = BetonFile(clips)
    samples = [Sample(src.sample(i).frames, -5 if i == 0 else 1, src.meta(i)) for i in range(8)]
    return write_beton(out, samples)
