"""The run folder's rules, each on its own (fast; the trainer tests use them end to end)."""

from __future__ import annotations

import json

import pytest

from vicmae.engine.checkpoint import load_checkpoint
from vicmae.engine.run_folder import (
    Checkpoints,
    RunFolderError,
    clear_run_dir,
    epoch_name,
    find_checkpoint,
    guard_run_dir,
    run_files,
    truncate_metrics,
    write_json,
)


def _state(epoch: int) -> dict:
    return {"kind": "pretrain", "model": {}, "optimizer": {}, "step": 4 * epoch, "epoch": epoch,
            "config": {}, "best": None}  # fmt: skip


def test_epoch_checkpoints_keep_the_newest(tmp_path):
    ckpts = Checkpoints(tmp_path, keep=2)
    for epoch in (1, 2, 3):
        assert ckpts.save(_state(epoch), epoch_end=True) == tmp_path / "last.pt"
    ckpts.save(_state(4))  # mid-epoch: last.pt only
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == [epoch_name(2), epoch_name(3)]
    assert load_checkpoint(tmp_path / epoch_name(3))["epoch"] == 3
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4
    none = Checkpoints(tmp_path / "none", keep=0)
    none.save(_state(1), epoch_end=True)
    assert [p.name for p in (tmp_path / "none").iterdir()] == ["last.pt"]
    off = Checkpoints(tmp_path / "off", keep=2, enabled=False)  # another rank than 0
    assert off.save(_state(1), epoch_end=True) is None and off.save_best(_state(1)) is None
    assert not (tmp_path / "off").exists()


def test_best_keeps_the_model_not_the_optimiser(tmp_path):
    Checkpoints(tmp_path, keep=0).save_best(_state(2) | {"rng": [1]})
    assert set(load_checkpoint(tmp_path / "best.pt")) == {
        "kind", "model", "config", "step", "epoch", "best"}  # fmt: skip


def test_a_folder_holding_a_run_is_guarded(tmp_path):
    guard_run_dir(tmp_path / "new", resume=False, overwrite=False)  # nothing there: fine
    (tmp_path / "notes.txt").write_text("mine")
    guard_run_dir(tmp_path, resume=False, overwrite=False)  # not a run folder
    (tmp_path / "metrics.jsonl").write_text("")  # what a start writes: not a run on its own
    guard_run_dir(tmp_path, resume=False, overwrite=False)
    (tmp_path / epoch_name(1)).write_bytes(b"")
    assert run_files(tmp_path) == [epoch_name(1)]
    with pytest.raises(RunFolderError, match="already holds a run"):
        guard_run_dir(tmp_path, resume=False, overwrite=False)
    guard_run_dir(tmp_path, resume=True, overwrite=False)
    guard_run_dir(tmp_path, resume=False, overwrite=True)
    with pytest.raises(RunFolderError, match="names a file"):
        guard_run_dir(tmp_path / "notes.txt", resume=True, overwrite=False)
    (tmp_path / "tb").mkdir()
    clear_run_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # only the run's


def test_resume_finds_a_file_a_folders_last_or_nothing(tmp_path):
    assert find_checkpoint(True, tmp_path) is None  # nothing yet: a fresh start
    (tmp_path / "last.pt").write_bytes(b"x")
    assert find_checkpoint(True, tmp_path) == tmp_path / "last.pt"
    assert find_checkpoint("", tmp_path) == tmp_path / "last.pt"
    assert find_checkpoint(str(tmp_path), tmp_path / "other") == tmp_path / "last.pt"
    (tmp_path / "e.pt").write_bytes(b"x")
    assert find_checkpoint(tmp_path / "e.pt", tmp_path / "other") == tmp_path / "e.pt"
    with pytest.raises(RunFolderError, match="no such checkpoint"):
        find_checkpoint(tmp_path / "missing.pt", tmp_path)


def test_truncate_metrics_drops_rows_past_the_checkpoint_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    truncate_metrics(path, 3)  # no file: nothing to do
    assert not path.exists()
    rows = [{"step": s, "loss": 1.0} for s in (1, 2, 3, 4)] + [{"loss": 2.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo')
    truncate_metrics(path, 3)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
    write_json(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
