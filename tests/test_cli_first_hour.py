"""What the train CLI shows a newcomer (issue 20 item 6): whole config descriptions, an
encoder export without a classifier unless asked, one result line under torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from media import TINY_MODEL, make_tiny_beton
from typer.testing import CliRunner

from vicmae.config import builtin_configs, load_config, to_dict
from vicmae.engine.checkpoint import save_checkpoint
from vicmae.model.vicmae import ViCMAE
from vicmae_cli.train import app

runner = CliRunner()
TINY = [*TINY_MODEL, "data.resolution=32"]


def test_configs_shows_each_description_whole():
    found = builtin_configs()
    # demo_cpu's description is the three lines before its example: all of them.
    assert found["demo_cpu"].endswith("160 clips of 5 texture classes, short side 64).")
    assert "vicmae train" not in found["demo_cpu"]  # the example line is not description
    res = runner.invoke(app, ["train", "configs"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    shown = " ".join(res.output.split())
    for name, about in found.items():
        assert f"{name} {' '.join(about.split())}" in shown  # wrapped, never cut


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cfg = load_config(None, TINY)
    path = tmp_path_factory.mktemp("export") / "last.pt"
    state = {"kind": "pretrain", "model": ViCMAE(cfg.model).state_dict(), "step": 0,
             "config": to_dict(cfg)}  # fmt: skip
    return save_checkpoint(path, state)


def test_export_writes_the_encoder_alone_unless_with_head(checkpoint, tmp_path):
    import json

    out = tmp_path / "vit.pth"
    res = runner.invoke(app, ["export", "timm", "--checkpoint", str(checkpoint), "--out",
                              str(out), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["head_classes"] == 0
    assert not any(k.startswith("head.") for k in torch.load(out, weights_only=True))
    res = runner.invoke(app, ["export", "timm", "--checkpoint", str(checkpoint), "--out",
                              str(out), "--with-head", "--force", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["head_classes"] == 1000
    state = torch.load(out, weights_only=True)
    assert state["head.weight"].shape == (1000, 64) and not state["head.weight"].any()


@pytest.mark.slow
def test_under_torchrun_only_rank_0_prints_the_result(tmp_path):
    beton = make_tiny_beton(tmp_path / "tiny.beton", n=16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "vicmae_cli.train",
        "train", "pretrain", "--beton", str(beton), "--out", str(tmp_path / "run"), *TINY,
        "--batch-size", "8", "optim.epochs=1", "optim.warmup_epochs=0", "data.num_workers=1",
        "run.progress=false", "run.max_steps=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("done:")]
    assert lines == [f"done: step 1, checkpoint {tmp_path / 'run' / 'last.pt'}"], done.stdout


def test_the_console_shows_a_config_summary_and_warns_of_a_warm_up_as_long_as_the_run(
    checkpoint, tmp_path
):
    """`linprobe --epochs 10` keeps Table 7's 10 warm-up epochs: the lr would only rise."""
    beton = make_tiny_beton(tmp_path / "tiny.beton", n=16)
    out = tmp_path / "probe"
    res = runner.invoke(app, ["train", "linprobe", "--beton", str(beton), "--checkpoint",
                              str(checkpoint), "--out", str(out), "--epochs", "10",
                              "probe.cached=true", "data.num_workers=1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "optim.warmup_epochs=10 is as long as the run (optim.epochs=10)" in text
    assert f"config (all of it: {out / 'config.yaml'}):" in text
    assert f"model the encoder of {checkpoint}" in text
    assert "optim sgd, batch 4096, 10 epochs (10 warm-up), base lr 0.1" in text
    assert "extract_batch" not in res.output  # the full config stays in config.yaml
    assert "extract_batch" in (out / "config.yaml").read_text()
    res = runner.invoke(app, ["train", "linprobe", "--beton", str(beton), "--checkpoint",
                              str(checkpoint), "--out", str(tmp_path / "p2"), "--epochs", "11",
                              "probe.cached=true", "data.num_workers=1"])  # fmt: skip
    assert res.exit_code == 0 and "warm-up" not in res.output.replace("(10 warm-up)", "")
