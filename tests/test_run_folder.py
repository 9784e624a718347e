"""The run folder's rules, each on its own (fast; the trainer tests use them end to end)."""

from __future__ import annotations

import errno
import json
import logging
import os

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
    undo_failed_start,
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
    rows = [{"step": s, "loss": 1.0} for s in (1, 2, 3, 4)] + [{"loss": 2.0}, {"step": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo')
    truncate_metrics(path, 3)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
    write_json(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_keep_one_keeps_the_newest_epoch_checkpoint(tmp_path):
    ckpts = Checkpoints(tmp_path, keep=1)
    ckpts.save(_state(1), epoch_end=True)
    assert _names(tmp_path) == [epoch_name(1), "last.pt"]
    ckpts.save(_state(2), epoch_end=True)
    assert _names(tmp_path) == [epoch_name(2), "last.pt"]


def test_where_hard_links_fail_the_epoch_checkpoint_is_a_copy(tmp_path, monkeypatch):
    """FAT, exFAT and some network shares have no hard links: os.link fails with EPERM
    there (no such file system can be mounted on this test machine, so os.link is made to
    fail as it does on one)."""

    def no_links(src, dst):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(src))

    monkeypatch.setattr(os, "link", no_links)
    Checkpoints(tmp_path, keep=1).save(_state(3), epoch_end=True)
    epoch, last = tmp_path / epoch_name(3), tmp_path / "last.pt"
    assert epoch.read_bytes() == last.read_bytes() and not os.path.samefile(epoch, last)
    assert _names(tmp_path) == [epoch_name(3), "last.pt"]  # no temporary left


def _failed_start(run_dir, metrics: str | None) -> None:
    """What a job writes before its first step: its config, data record, TensorBoard
    folder and (when it got that far) an empty metrics.jsonl."""
    run_dir.mkdir(exist_ok=True)
    (run_dir / "config.yaml").write_text("model: {}\n")
    (run_dir / "data.json").write_text("{}\n")
    (run_dir / "tb").mkdir()
    (run_dir / "tb" / "events.out.tfevents.1").write_bytes(b"x")
    if metrics is not None:
        (run_dir / "metrics.jsonl").write_text(metrics)


@pytest.mark.parametrize("metrics", [None, ""])
def test_a_failed_start_takes_back_what_it_wrote_and_the_folder_it_made(tmp_path, metrics):
    made, mine = tmp_path / "made", tmp_path / "mine"
    _failed_start(made, metrics)
    undo_failed_start(made, made_dir=True)
    assert not made.exists()  # the start made the folder: it goes too
    _failed_start(mine, metrics)
    undo_failed_start(mine, made_dir=False)
    assert mine.is_dir() and _names(mine) == []  # the user's folder stays
    undo_failed_start(tmp_path / "never-made", made_dir=True)  # failed before making it


@pytest.mark.parametrize(
    ("what", "metrics"),
    [
        ("a logged step", '{"step": 1, "loss": 2.0}\n'),
        ("a row the crash tore after one byte", "{"),
        ("a checkpoint", ""),
    ],
)
def test_a_failed_run_that_logged_or_saved_is_left_as_it_is(tmp_path, what, metrics):
    run = tmp_path / "run"
    _failed_start(run, metrics)
    if what == "a checkpoint":
        (run / "last.pt").write_bytes(b"x")
    before = _names(run)
    undo_failed_start(run, made_dir=True)
    assert _names(run) == before and (run / "tb" / "events.out.tfevents.1").is_file()


def test_clearing_warns_only_when_it_replaces_a_failed_starts_leftovers(tmp_path, caplog):
    leftovers, run, empty = tmp_path / "leftovers", tmp_path / "run", tmp_path / "empty"
    _failed_start(leftovers, None)
    _failed_start(run, "")
    (run / "last.pt").write_bytes(b"x")  # --overwrite of a run: no leftovers to name
    empty.mkdir()
    with caplog.at_level(logging.WARNING, logger="vicmae"):
        for folder in (leftovers, run, empty):
            clear_run_dir(folder)
    assert [r.getMessage() for r in caplog.records] == [
        f"{leftovers}: replacing what a start with no checkpoint left (config.yaml, data.json, tb)"
    ]
    assert _names(leftovers) == _names(run) == []
