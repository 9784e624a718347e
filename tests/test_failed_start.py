"""A newcomer's first mistake costs one retry, not two (issue 20 items 1 and 2).

A global batch larger than the data is refused in the trainer's own terms (the flag and
key, the global batch, the per-device share, the largest that fits), and a job that fails
before its first step leaves no run behind: the corrected command, the one the error
suggests, runs. For the three jobs, through the CLI, on a real tiny .beton.
"""

from __future__ import annotations

import re

import pytest
from media import TINY_MODEL, make_tiny_beton, tiny_pretrain_checkpoint
from typer.testing import CliRunner

from vicmae_cli.train import app

runner = CliRunner()
SHORT = [
    "data.resolution=32",
    "optim.epochs=1",
    "optim.warmup_epochs=0",
    "data.num_workers=1",
    "run.progress=false",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-hour")
    beton = make_tiny_beton(root / "tiny.beton", n=16)
    ckpt = tiny_pretrain_checkpoint(root / "pretrain" / "last.pt")
    return beton, ckpt


def _job(kind: str, beton, ckpt, out, *extra: str) -> list[str]:
    args = ["train", kind, "--beton", str(beton), "--out", str(out), *SHORT, *extra]
    # The evaluations take the model from the pretraining checkpoint.
    return [*args, *TINY_MODEL] if kind == "pretrain" else [*args, "--checkpoint", str(ckpt)]


def _error(res) -> str:
    """The one-line error of a failed job (after the run's own log lines)."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("error: "), res.output
    return last


@pytest.mark.parametrize("kind", ["pretrain", "linprobe", "finetune"])
def test_a_batch_too_large_is_refused_and_the_suggested_retry_runs(data, tmp_path, kind):
    beton, ckpt = data
    out = tmp_path / "run"
    # 16 samples; 32 per step (one micro-batch of 32 on a CPU): the loader has no batch.
    line = _error(runner.invoke(app, _job(kind, beton, ckpt, out, "--batch-size", "32")))
    assert (
        "tiny.beton: 16 samples is fewer than one optimiser step's batch: --batch-size "
        "(optim.batch_size) 32 is 32 per device on 1 device; use --batch-size 16 or less"
    ) in line
    assert not out.exists()  # the failed start left nothing behind
    fits = int(re.search(r"use --batch-size (\d+) or less", line).group(1))
    res = runner.invoke(app, _job(kind, beton, ckpt, out, "--batch-size", str(fits)))
    assert res.exit_code == 0, res.output  # not refused as "already holds a run"
    assert (out / "last.pt").is_file()


def test_an_epoch_shorter_than_one_step_names_the_largest_batch_that_fits(data, tmp_path):
    beton, ckpt = data
    out = tmp_path / "run"
    # 8 per forward x 3 forwards = 24 per step; an epoch gives 2 forwards of 8.
    args = _job("pretrain", beton, ckpt, out, "--batch-size", "24", "optim.micro_batch=8")
    line = _error(runner.invoke(app, args))
    assert "an epoch of 2 batch(es) of 8 per device is fewer than one optimiser step's " in line
    assert "--batch-size (optim.batch_size) 24 is 24 per device" in line
    assert line.endswith("use --batch-size 16 or less")
    assert not out.exists()


def test_a_failed_start_in_an_existing_folder_leaves_only_that_folder(data, tmp_path):
    beton, ckpt = data
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _error(runner.invoke(app, _job("pretrain", beton, ckpt, out, "--batch-size", "32")))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the user's file stays


def test_leftovers_of_a_start_without_checkpoint_are_no_run(data, tmp_path):
    """A start killed before its first checkpoint (no chance to clean up) left config.yaml
    and a logged row: that is no run, and a new start replaces it."""
    beton, ckpt = data
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: {}\n")
    (out / "metrics.jsonl").write_text('{"step": 3, "loss": 9.0}\n')
    res = runner.invoke(app, _job("pretrain", beton, ckpt, out, "--batch-size", "8"))
    assert res.exit_code == 0, res.output
    rows = (out / "metrics.jsonl").read_text()
    assert '"step": 3,' not in rows and '"loss": 9.0' not in rows  # the new run's rows only
    assert "replacing what a start with no checkpoint left" in res.output
