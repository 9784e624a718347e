"""Jobs end cleanly: loader threads stopped before exit, SIGTERM saves and asks for a requeue.

The exit-134 abort ("terminate called without an active exception" after ``done: ...``)
came from a loader thread still decoding inside numba's threading layer while the process
exited: ffcv's ``close`` does not wait for its thread. Now closing an epoch's iterator
joins it, and the engine closes its iterators itself.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ffcv.loader.epoch_iterator import EpochIterator
from media import TINY_MODEL, make_tiny_beton

from vicmae.engine.checkpoint import load_checkpoint
from vicmae.engine.signals import REQUEUE_EXIT_CODE
from vicmae_data import make_loader

TINY = [
    *TINY_MODEL, "data.resolution=32", "optim.batch_size=8", "optim.warmup_epochs=1",
    "loss.contrastive_start_epoch=0", "run.progress=false", "run.log_every_steps=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def beton(tmp_path_factory) -> Path:
    return make_tiny_beton(tmp_path_factory.mktemp("data") / "tiny.beton", n=64)


def _pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, EpochIterator) and t.is_alive()]


def test_closing_an_epoch_mid_way_stops_its_loader_thread(beton):
    before = set(_pipeline_threads())  # other tests' loaders are not this test's business
    loader = make_loader(beton, 4, num_workers=2, resolution=32)
    batches = iter(loader)
    next(batches)  # 15 batches left: the thread is decoding ahead
    started = set(_pipeline_threads()) - before
    assert started  # the epoch's thread was running
    batches.close()
    assert [t for t in started if t.is_alive()] == []


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vicmae_cli.train", "train", "pretrain", *args]


@pytest.mark.slow
def test_the_cli_exits_cleanly_every_time(beton, tmp_path):
    """Stopped mid-epoch with two decoding threads, several times: status 0 every time."""
    for i in range(3):
        out = tmp_path / f"run{i}"
        proc = subprocess.run(
            _cli("--beton", str(beton), "--out", str(out), *TINY, "data.num_workers=2",
                 "optim.epochs=2", f"run.max_steps={2 + i}"),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "terminate called" not in proc.stderr
        assert f"done: step {2 + i}" in proc.stdout


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_that_resume_continues(beton, tmp_path):
    out = tmp_path / "run"
    args = ["--beton", str(beton), "--out", str(out), *TINY, "data.num_workers=1",
            "optim.epochs=50"]  # fmt: skip  # 800 steps: far more than the test waits for
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == REQUEUE_EXIT_CODE, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr
    stopped = load_checkpoint(out / "last.pt")["step"]
    assert 2 <= stopped < 800
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert rows[-1]["step"] == stopped  # everything logged is in the checkpoint
    # --resume continues from there (here two more steps).
    res = subprocess.run(
        _cli(*args, "--resume", f"run.max_steps={stopped + 2}"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resumed from {out / 'last.pt'} at step {stopped}" in res.stderr
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps == list(range(1, stopped + 3))
