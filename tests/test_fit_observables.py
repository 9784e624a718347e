"""What ``fit`` decides from the clock: the wall-time checkpoint and the throughput figures.

A run whose loss turns non-finite at step 3 names its last good checkpoint: with
``run.ckpt_every_minutes`` tiny, the one the clock asked for at step 2; with the default
30 minutes and no step or epoch checkpoint due yet, none.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import torch
from media import TINY_MODEL, make_tiny_beton
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vicmae.config import LinprobeConfig, load_config
from vicmae.engine.checkpoint import load_checkpoint, save_checkpoint
from vicmae.jobs.linprobe import linprobe
from vicmae.jobs.pretrain import NonFiniteLossError, pretrain

TINY = [
    *TINY_MODEL, "data.resolution=32", "optim.batch_size=8", "optim.epochs=4",
    "optim.warmup_epochs=1",
    "loss.contrastive_start_epoch=0", "data.num_workers=1", "run.progress=false",
    "run.log_every_steps=1", "run.ckpt_every_steps=1000",
]  # fmt: skip


@pytest.fixture(scope="module")
def beton(tmp_path_factory) -> Path:
    return make_tiny_beton(tmp_path_factory.mktemp("data") / "tiny.beton")


@pytest.mark.parametrize("minutes,message", [
    (1e-9, r"loss is nan at step 3 .*Last good checkpoint: .*last\.pt"),
    (30.0, r"loss is nan at step 3 .*No checkpoint yet"),
    (0.0, r"loss is nan at step 3 .*No checkpoint yet"),  # 0: no wall-time checkpoint at all
])  # fmt: skip
def test_wall_clock_checkpoint(beton, tmp_path, minutes, message):
    # An absurd lr (1e9 x 8 / 256) blows the weights up: the loss is NaN at step 3.
    over = [*TINY, f"data.betons=[{beton}]", f"run.out={tmp_path}", "optim.base_lr=1e9",
            f"run.ckpt_every_minutes={minutes}"]  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=message):
        pretrain(load_config(None, over))


def test_logging_and_epoch_checkpoint_cadence_and_throughput(beton, tmp_path):
    """Rows every 3 steps and at each epoch end (4 steps); an epoch checkpoint per epoch
    (keep 2). Each row's samples/s covers its own window of steps: batch x steps /
    (samples/s) is that window's time, and a run's windows fit inside its wall time."""
    over = [*TINY, f"data.betons=[{beton}]", f"run.out={tmp_path}", "optim.epochs=2",
            "run.log_every_steps=3", "run.keep=2"]  # fmt: skip
    t0 = time.monotonic()
    pretrain(load_config(None, over))
    wall = time.monotonic() - t0
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 4, 6, 8]
    windows = [8 * n / r["samples_per_s"] for n, r in zip([3, 1, 2, 2], rows, strict=True)]
    assert 0 < sum(windows) <= wall
    assert [load_checkpoint(tmp_path / f"epoch_000{e}.pt")["step"] for e in (1, 2)] == [4, 8]


def test_one_step_epochs_run_and_less_than_one_step_is_refused(beton, tmp_path):
    over = [*TINY, f"data.betons=[{beton}]", "optim.epochs=2"]
    # 32 samples, batch 32: one optimiser step an epoch.
    result = pretrain(load_config(None, [*over, f"run.out={tmp_path / 'one'}",
                                         "optim.batch_size=32"]))  # fmt: skip
    assert (result.step, result.epoch) == (2, 2)
    # Batch 64 as 2 x 32: the epoch's one batch of 32 is less than a step.
    with pytest.raises(ValueError, match="fewer than one optimiser step"):
        pretrain(load_config(None, [*over, f"run.out={tmp_path / 'none'}",
                                    "optim.batch_size=64", "optim.accum=2"]))  # fmt: skip


def test_a_checkpoint_whose_weights_do_not_fit_is_refused(beton, tmp_path):
    over = [*TINY, f"data.betons=[{beton}]", f"run.out={tmp_path}", "optim.epochs=1"]
    pretrain(load_config(None, [*over, "run.max_steps=2"]))
    state = load_checkpoint(tmp_path / "last.pt")
    state["model"]["decoder_pred.bias"] = torch.zeros(5)  # the config still matches
    save_checkpoint(tmp_path / "last.pt", state)
    with pytest.raises(ValueError, match="its model does not fit this config"):
        pretrain(load_config(None, over), resume=True)


def test_a_probe_cut_short_is_still_validated(beton, tmp_path):
    """Stopped mid-epoch (step 6 of 4-step epochs): validated after epoch 1 and at the stop."""
    over = ["model.arch=vit_pico_patch8", "data.resolution=32", "data.num_workers=1",
            "run.progress=false", "run.log_every_steps=2", "optim.batch_size=8",
            "optim.epochs=3", f"data.betons=[{beton}]", f"data.val_beton={beton}",
            f"run.out={tmp_path}", "run.max_steps=6"]  # fmt: skip
    linprobe(load_config(None, over, cls=LinprobeConfig))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"]) for r in rows if "val_top1" in r] == [(4, 1.0), (6, 1.5)]


def test_resume_says_what_it_will_do(beton, tmp_path, caplog):
    """A resume with nothing left below its cap or at its last step says so (and trains
    nothing); one that trains does not. At another batch size (--allow-changes) it warns that
    the schedule's step and the logged step now differ, and TensorBoard keeps every step
    logged before the resume (its purge step is the logged step, not the schedule's)."""
    caplog.set_level(logging.INFO, logger="vicmae")
    over = [*TINY, f"data.betons=[{beton}]", "optim.epochs=1"]  # 4 steps of 8

    def run(out: str, *extra: str, **how) -> str:
        caplog.clear()
        pretrain(load_config(None, [*over, f"run.out={tmp_path / out}", *extra]), **how)
        return caplog.text

    run("a", "run.max_steps=2")
    text = run("a", "run.max_steps=2", resume=True)
    assert "nothing to train: the run is at step 2 and run.max_steps=2" in text
    text = run("a", resume=True)  # steps 3 and 4
    assert "nothing to train" not in text and "another batch size" not in text
    text = run("a", resume=True)
    assert "nothing to train: the run is at step 4 and that is the last step" in text

    run("b", "run.max_steps=2")  # 16 samples seen: one step of 16 at the new batch
    text = run("b", "optim.batch_size=16", resume=True, allow_changes=True)
    assert "resuming at another batch size or data" in text
    events = EventAccumulator(str(tmp_path / "b" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]  # 2 of 8, then 1 of 16
