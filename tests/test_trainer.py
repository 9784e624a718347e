"""The pretraining loop on a real tiny .beton through the real loader and the real model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_data import make_tiny_beton
from typer.testing import CliRunner

from vicmae.checkpoint import load_checkpoint
from vicmae.config import load_config
from vicmae.trainer import NonFiniteLossError, pretrain
from vicmae_cli.train import app

TINY = [
    "model.arch=vit_pico_patch8",
    "data.resolution=32",
    "model.decoder_dim=32",
    "model.decoder_depth=1",
    "model.decoder_heads=2",
    "model.projector_dims=[64,64,64]",
    "optim.batch_size=8",
    "optim.epochs=2",
    "optim.warmup_epochs=1",
    "optim.base_lr=1e-2",
    "loss.contrastive_start_epoch=0",
    "data.num_workers=1",
    "run.progress=false",
    "run.log_every_steps=1",
]


@pytest.fixture(scope="module")
def beton(tmp_path_factory) -> Path:
    return make_tiny_beton(tmp_path_factory.mktemp("data") / "tiny.beton")


@pytest.fixture(scope="module")
def full_run(beton, tmp_path_factory):
    """Two epochs (8 optimiser steps) uninterrupted, through the library function."""
    out = tmp_path_factory.mktemp("full")
    cfg = load_config(None, [*TINY, f"data.betons=[{beton}]", f"run.out={out}"])
    return pretrain(cfg)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_loss_is_finite_and_logged(full_run):
    assert full_run.step == 8 and full_run.epoch == 2
    rows = _rows(full_run.run_dir)
    assert [r["step"] for r in rows] == list(range(1, 9))
    for r in rows:
        for k in ("loss", "loss_recon", "loss_contrastive", "lr", "lambda", "samples_per_s"):
            assert np.isfinite(r[k]), (k, r)
        assert 0 <= r["data_wait_pct"] <= 100
        assert r["lambda"] == 0.025
    # Warm-up: lr rises over the first epoch (4 steps), then the cosine brings it down.
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == 0.0 and lrs[4] == max(lrs) and lrs[-1] < lrs[4]
    assert any((full_run.run_dir / "tb").iterdir())
    ckpt = load_checkpoint(full_run.checkpoint)
    assert ckpt["step"] == 8 and ckpt["config"]["model"]["arch"] == "vit_pico_patch8"
    assert set(ckpt["rng"][0]) == {"torch", "cuda", "numpy", "python"}


def test_cli_resume_equals_uninterrupted_run(beton, full_run, tmp_path):
    """Stop mid-epoch (step 6 of 8) through the CLI, resume, compare with the full run."""
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", "pretrain", "--beton", str(beton), "--out", str(out), *TINY]
    res = runner.invoke(app, [*args, "run.max_steps=6", "run.ckpt_every_steps=3"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out / "checkpoint.pt")["batch_in_epoch"] == 2  # mid-epoch
    res = runner.invoke(app, [*args, "--resume", "run.max_steps=null"])
    assert res.exit_code == 0, res.output

    full, resumed = _rows(full_run.run_dir), _rows(out)
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(full, resumed, strict=True):
        for k in ("loss", "loss_recon", "loss_contrastive", "lr", "lambda"):
            assert a[k] == b[k], (a["step"], k)
    sa = load_checkpoint(full_run.checkpoint)["model"]
    sb = load_checkpoint(out / "checkpoint.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(beton, tmp_path):
    # An absurd lr (1e9 x 8 / 256) blows the weights up: the loss is NaN at step 3.
    over = [*TINY, f"data.betons=[{beton}]", f"run.out={tmp_path}", "optim.base_lr=1e9"]
    cfg = load_config(None, [*over, "run.ckpt_every_steps=2", "optim.epochs=4"])
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3 .*Last good checkpoint"):
        pretrain(cfg)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(beton, tmp_path):
    """Two ranks under torchrun (gloo): sharded loader, DDP, negatives gathered across ranks."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "vicmae_cli.train", "train", "pretrain", "--beton", str(beton), "--out", str(out),
        *TINY, "run.max_steps=2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 device(s)" in proc.stderr
    rows = _rows(out)  # rank 0 alone writes metrics
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss_contrastive"]) for r in rows)
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 2 and len(ckpt["rng"]) == 2  # each rank's RNG saved
