"""Exact resume where the simple case hides the bugs: accumulation > 1, and the fp16 scaler.

With ``optim.accum=1`` the micro-batches to skip in a resumed epoch equal its optimiser
steps, so a resume that forgets the accumulation passes every other test; and a scaler
left at its initial state after a resume only shows after thousands of steps. Both are
checked here through the CLI, the real loader and the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from media import TINY_MODEL, make_tiny_beton
from typer.testing import CliRunner

from vicmae.engine.checkpoint import load_checkpoint
from vicmae_cli.train import app

TINY = [
    *TINY_MODEL, "data.resolution=32", "optim.batch_size=8", "optim.epochs=2",
    "optim.warmup_epochs=1", "optim.base_lr=1e-2",
    "loss.contrastive_start_epoch=0", "data.num_workers=1", "run.progress=false",
    "run.log_every_steps=1",
]  # fmt: skip
# Each optimiser step of 8 is 2 forwards of 4: 8 micro-batches and 4 steps an epoch.
ACCUM = [*TINY, "optim.accum=2"]
runner = CliRunner()


@pytest.fixture(scope="module")
def beton(tmp_path_factory) -> Path:
    return make_tiny_beton(tmp_path_factory.mktemp("data") / "tiny.beton")


def _train(beton: Path, out: Path, *over: str) -> None:
    res = runner.invoke(app, ["train", "pretrain", "--beton", str(beton), "--out", str(out),
                              *over])  # fmt: skip
    assert res.exit_code == 0, res.output


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_with_accumulation_equals_uninterrupted_run(beton, tmp_path):
    """Stopped at step 6 of 8 (2 steps = 4 micro-batches into epoch 2), resumed: every
    step's loss parts and the final weights are bit for bit the uninterrupted run's."""
    full, out = tmp_path / "full", tmp_path / "run"
    _train(beton, full, *ACCUM)
    _train(beton, out, *ACCUM, "run.max_steps=6", "run.ckpt_every_steps=3")
    stopped = load_checkpoint(out / "last.pt")
    assert (stopped["step"], stopped["step_in_epoch"], stopped["micro_batch"]) == (6, 2, 4)
    _train(beton, out, *ACCUM, "--resume", "run.max_steps=null")

    a, b = _rows(full), _rows(out)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss", "loss_recon", "loss_contrastive", "lr", "lambda"):
            assert ra[k] == rb[k], (ra["step"], k)
    sa = load_checkpoint(full / "last.pt")["model"]
    sb = load_checkpoint(out / "last.pt")["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fp16_loss_scaler_state_survives_a_resume(beton, tmp_path):
    """The scaler counts the finite steps since its scale last changed (``_growth_tracker``;
    the scale doubles after 2000). A run stopped after 2 of 4 steps and resumed must end
    with the count of 4 the uninterrupted run has: a scaler not restored restarts at 0.

    fp16 autocast and the enabled scaler are the real ones; on a CPU they run as on a GPU.
    """
    short = [*TINY, "optim.epochs=1", "optim.warmup_epochs=0", "run.precision=fp16"]
    _train(beton, tmp_path, *short, "run.max_steps=2")
    saved = load_checkpoint(tmp_path / "last.pt")["scaler"]
    # No step overflowed at this scale (so no step was skipped and the count is the step).
    assert (saved["scale"], saved["_growth_tracker"]) == (2.0**16, 2)
    _train(beton, tmp_path, *short, "--resume", "run.max_steps=null")
    final = load_checkpoint(tmp_path / "last.pt")
    assert final["step"] == 4
    assert (final["scaler"]["scale"], final["scaler"]["_growth_tracker"]) == (2.0**16, 4)
