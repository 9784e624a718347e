"""A run records the files it trained on; ``--resume`` on other files is refused, listing them.

The issue's repro (issue 19, item 1): pretrain on a .beton, replace the file under the same
name (another dataset, or the same number of samples with other contents), ``--resume``.
Real tiny files, the real CLI, the real model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from media import TINY_MODEL, make_tiny_beton
from typer.testing import CliRunner

from vicmae.engine.checkpoint import load_checkpoint
from vicmae.engine.data_record import data_changes
from vicmae_cli.train import app
from vicmae_data.format.beton import BetonFile
from vicmae_data.format.tables import FIELD_DESC, HEADER, METADATA
from vicmae_data.inspect.identity import beton_identity

runner = CliRunner()
TINY = [
    *TINY_MODEL, "data.resolution=32", "optim.batch_size=8", "optim.epochs=2",
    "optim.warmup_epochs=1", "data.num_workers=1",
    "run.progress=false", "run.log_every_steps=1",
]  # fmt: skip


def _relabelled(good: Path, out: Path) -> Path:
    """``good`` with every label flipped (0 <-> 1): same size, same sample count."""
    data = bytearray(good.read_bytes())
    start = HEADER.itemsize + 3 * FIELD_DESC.itemsize + METADATA.fields["f1"][1]
    for i in range(len(BetonFile(good))):
        at = start + i * METADATA.itemsize
        label = int.from_bytes(data[at : at + 8], "little")
        data[at : at + 8] = (1 - label).to_bytes(8, "little")
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """A pretraining run of one epoch (2 of 4 steps) on a 16-sample file."""
    root = tmp_path_factory.mktemp("resume-data")
    beton = make_tiny_beton(root / "sw.beton", n=16)
    out = root / "run"
    res = runner.invoke(app, _args(beton, out, "run.max_steps=2"))
    assert res.exit_code == 0, res.output
    return beton, out


def _args(beton: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "pretrain", "--beton", str(beton), "--out", str(out), *TINY, *extra]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def test_the_run_records_every_file_it_trained_on(run):
    beton, out = run
    record = json.loads((out / "data.json").read_text())
    (entry,) = record["data.betons"]
    assert entry == beton_identity(beton).to_json()
    assert entry["samples"] == 16 and entry["bytes"] == beton.stat().st_size
    assert entry["classes"] == {"0": "class0", "1": "class1"}
    assert record["data.val_beton"] is None


def _refused(res) -> list[str]:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = res.output.strip().splitlines()
    assert (
        lines[0].startswith("error: --resume") and "differs from what the run trained" in lines[0]
    )
    assert "--allow-changes" in lines[-1]
    return lines[1:-1]


def test_resume_on_another_dataset_under_the_same_name_is_refused(run, tmp_path):
    beton, out = run
    saved = tmp_path / "saved.beton"
    shutil.copyfile(beton, saved)
    before = _snapshot(out)
    try:
        make_tiny_beton(beton, n=32, frames=3)  # another dataset, same path
        changes = _refused(runner.invoke(app, _args(beton, out, "--resume")))
        assert any("data.betons[0] sw.beton: 16 -> 32 samples" in x for x in changes), changes
        assert any("size " in x for x in changes) and any("fingerprint" in x for x in changes)
        # Nothing was written: checkpoints, metrics, config and record as they were.
        assert _snapshot(out) == before
    finally:
        shutil.copyfile(saved, beton)


def test_a_same_size_swap_is_refused_by_its_fingerprint(run, tmp_path):
    beton, out = run
    saved = tmp_path / "saved.beton"
    shutil.copyfile(beton, saved)
    try:
        _relabelled(saved, beton)
        assert beton.stat().st_size == saved.stat().st_size
        changes = _refused(runner.invoke(app, _args(beton, out, "--resume")))
        assert not any("samples" in x or "size" in x for x in changes), changes
        assert any("contents (fingerprint of its tables)" in x for x in changes), changes
    finally:
        shutil.copyfile(saved, beton)


def test_allowed_changes_continue_and_keep_the_earlier_record(run, tmp_path):
    beton, first = run
    out = tmp_path / "run"
    shutil.copytree(first, out)
    other = _relabelled(beton, tmp_path / "sw.beton")  # the same name, in another folder
    res = runner.invoke(app, _args(other, out, "--resume", "--allow-changes", "run.max_steps=null"))
    assert res.exit_code == 0, res.output
    record = json.loads((out / "data.json").read_text())
    assert record["data.betons"][0] == beton_identity(other).to_json()
    (earlier,) = record["earlier"]
    assert earlier["until_step"] == 2
    assert earlier["data.betons"][0] == beton_identity(beton).to_json()
    assert load_checkpoint(out / "last.pt")["step"] == 4


def test_a_resume_on_the_same_files_is_not_refused(run, tmp_path):
    beton, first = run
    out = tmp_path / "run"
    shutil.copytree(first, out)
    res = runner.invoke(app, _args(beton, out, "--resume", "run.max_steps=null"))
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out / "last.pt")["step"] == 4
    assert json.loads((out / "data.json").read_text()).get("earlier", []) == []


def test_changes_are_listed_one_line_each(tmp_path):
    a = beton_identity(make_tiny_beton(tmp_path / "a.beton", n=8)).to_json()
    b = beton_identity(make_tiny_beton(tmp_path / "b.beton", n=8)).to_json()
    assert data_changes({"data.betons": [a]}, {"data.betons": [a]}) == []
    lines = data_changes(
        {"data.betons": [a], "data.val_beton": None},
        {"data.betons": [a, b], "data.val_beton": b},
    )
    assert lines == ["data.betons: 1 -> 2 files", f"data.val_beton: none -> {b['path']}"]
    lines = data_changes({"data.betons": [a]}, {"data.betons": [b]})
    assert lines == [f"data.betons[0] b.beton: path {a['path']} -> {b['path']}"]
