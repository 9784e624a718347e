"""What a resumed run keeps: every metrics row and TensorBoard point, once, in step order; and
what it trains: to the end, unless ``run.max_steps`` is given again (it is not carried over).

Real runs through the CLI (the tiny model on a real .beton: 4 steps an epoch, 8 in all); the
TensorBoard event files are read back with TensorBoard's own reader.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from media import TINY_MODEL, make_tiny_beton
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from vicmae_cli.train import app

TINY = [
    *TINY_MODEL, "data.resolution=32", "optim.batch_size=8", "optim.epochs=2",
    "optim.warmup_epochs=1", "data.num_workers=1", "run.progress=false", "run.log_every_steps=1",
]  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def beton(tmp_path_factory) -> Path:
    return make_tiny_beton(tmp_path_factory.mktemp("data") / "tiny.beton")


def _train(beton: Path, out: Path, *extra: str) -> str:
    res = runner.invoke(app, ["train", "pretrain", "--beton", str(beton), "--out", str(out),
                              *TINY, *extra])  # fmt: skip
    assert res.exit_code == 0, res.output
    return res.output


def _row_steps(out: Path) -> list[int]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


def _board_steps(out: Path) -> list[int]:
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    return [e.step for e in events.Scalars("loss")]


def test_resume_trains_to_the_end_and_keeps_every_point(beton, tmp_path):
    out = tmp_path / "run"
    _train(beton, out, "run.max_steps=3")
    text = _train(beton, out, "--resume")  # the saved run.max_steps=3 is not carried over
    assert "done: step 8" in text
    assert _row_steps(out) == _board_steps(out) == list(range(1, 9))
    # In a log file (not a terminal) every step line says how long it ran and has left.
    lines = [ln for ln in text.splitlines() if re.search(r"step \d/8 ", ln)]
    assert len(lines) == 5, text
    for line in lines:
        assert re.search(r"elapsed \d+:\d\d:\d\d  ETA (\d+:\d\d:\d\d|\?)$", line), line
    assert lines[-1].endswith("ETA 0:00:00")


def test_rows_past_the_checkpoint_are_replaced_once_and_max_steps_is_obeyed(beton, tmp_path):
    out = tmp_path / "run"
    _train(beton, out, "run.max_steps=4")
    at_4 = tmp_path / "step4.pt"
    shutil.copy(out / "last.pt", at_4)
    assert "done: step 6" in _train(beton, out, "--resume", "run.max_steps=6")
    assert _row_steps(out) == _board_steps(out) == list(range(1, 7))
    # As if killed after logging steps 5 and 6 but before saving them: they are trained,
    # logged and drawn again, each once.
    shutil.copy(at_4, out / "last.pt")
    _train(beton, out, "--resume", "run.max_steps=6")
    assert _row_steps(out) == _board_steps(out) == list(range(1, 7))
    # Nothing left below the cap: nothing trained, nothing logged twice.
    text = _train(beton, out, "--resume", "run.max_steps=6")
    assert "nothing to train: the run is at step 6 and run.max_steps=6" in text
    assert "done: step 6" in text
    assert _row_steps(out) == _board_steps(out) == list(range(1, 7))


def test_an_evaluation_resumed_with_nothing_to_train_logs_nothing_twice(beton, tmp_path):
    out = tmp_path / "probe"
    probe = ["train", "linprobe", "--beton", str(beton), "--val-beton", str(beton), "--out",
             str(out), "--random-init", "--arch", "vit_pico_patch8", "data.resolution=32",
             "optim.batch_size=8", "optim.epochs=1", "optim.warmup_epochs=0",
             "data.num_workers=1", "run.progress=false", "run.log_every_steps=1"]  # fmt: skip
    for cap in ("run.max_steps=3", "run.max_steps=3", "run.max_steps=null"):
        res = runner.invoke(app, [*probe, *(["--resume"] if out.exists() else []), cap])
        assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # Training rows 1..4; the validation where the first sitting stopped (3) and at the
    # epoch's end (4), each once.
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "val_top1" in r] == [3, 4]
