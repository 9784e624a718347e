"""Pretraining through the engine on a real tiny .beton, the real loader and the real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from media import TINY_MODEL, make_tiny_beton
from typer.testing import CliRunner

from vicmae.config import load_config
from vicmae.engine.checkpoint import load_checkpoint
from vicmae.jobs.pretrain import NonFiniteLossError, pretrain
from vicmae_cli.train import app

TINY = [
    *TINY_MODEL,
    "data.resolution=32",
    "optim.batch_size=8",
    "optim.epochs=2",
    "optim.warmup_epochs=1",
    "optim.base_lr=1e-2",
    "loss.contrastive_start_epoch=0",
    "data.num_workers=1",
    "run.progress=false",
    "run.log_every_steps=1",
]
runner = CliRunner()


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


def _args(beton: Path, out: Path) -> list[str]:
    return ["train", "pretrain", "--beton", str(beton), "--out", str(out), *TINY]


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
    ckpt = load_checkpoint(full_run.checkpoint)  # safe loading reads our own checkpoints
    assert full_run.checkpoint.name == "last.pt"
    assert ckpt["step"] == 8 and ckpt["config"]["model"]["arch"] == "vit_pico_patch8"
    assert set(ckpt) == {"kind", "model", "optimizer", "scaler", "step", "epoch",
                         "step_in_epoch", "micro_batch", "rng", "best", "config"}  # fmt: skip
    assert set(ckpt["rng"][0]) == {"torch", "cuda", "numpy", "python"}


def test_cli_resume_equals_uninterrupted_run(beton, full_run, tmp_path):
    """Stop mid-epoch (step 6 of 8) through the CLI, resume, compare with the full run."""
    out = tmp_path / "run"
    res = runner.invoke(app, [*_args(beton, out), "run.max_steps=6", "run.ckpt_every_steps=3"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out / "last.pt")["step_in_epoch"] == 2  # mid-epoch
    res = runner.invoke(app, [*_args(beton, out), "--resume", "run.max_steps=null"])
    assert res.exit_code == 0, res.output

    full, resumed = _rows(full_run.run_dir), _rows(out)
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(full, resumed, strict=True):
        for k in ("loss", "loss_recon", "loss_contrastive", "lr", "lambda"):
            assert a[k] == b[k], (a["step"], k)
    sa = load_checkpoint(full_run.checkpoint)["model"]
    sb = load_checkpoint(out / "last.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_second_run_into_the_same_out_is_refused_and_touches_nothing(beton, full_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("last.pt", "metrics.jsonl", "config.yaml"):
        (out / name).write_bytes((full_run.run_dir / name).read_bytes())
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    res = runner.invoke(app, _args(beton, out))
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text
    assert "already holds a run" in text and "--resume" in text and "--overwrite" in text
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before


def test_overwrite_starts_again(beton, full_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 99, "loss": 1.0}\n')
    (out / "epoch_0007.pt").write_bytes(b"old")
    res = runner.invoke(app, [*_args(beton, out), "--overwrite", "run.max_steps=1"])
    assert res.exit_code == 0, res.output
    assert [r["step"] for r in _rows(out)] == [1]
    assert not (out / "epoch_0007.pt").exists()


def test_resume_refuses_changed_settings_with_the_differences_listed(beton, full_run, tmp_path):
    other = make_tiny_beton(tmp_path / "other.beton", n=16)
    out = full_run.run_dir
    before = (out / "last.pt").read_bytes()
    res = runner.invoke(app, [*_args(other, out), "--resume"])
    assert res.exit_code == 2, res.output
    assert "data.betons" in res.output and "--allow-changes" in res.output
    res = runner.invoke(app, [*_args(beton, out), "--resume", "optim.batch_size=16"])
    assert res.exit_code == 2
    assert "optim.batch_size: 8 -> 16" in res.output and "--allow-changes" in res.output
    # Another architecture never resumes, allowed or not.
    res = runner.invoke(
        app, [*_args(beton, out), "--resume", "--allow-changes", "--arch", "vit_tiny_patch16"]
    )
    assert res.exit_code == 2
    text = res.output.strip()
    assert len(text.splitlines()) == 1 and "another model" in text and "model.arch" in text
    assert (out / "last.pt").read_bytes() == before


def test_resume_with_allowed_batch_change_continues(beton, full_run, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, [*_args(beton, out), "run.max_steps=4"])  # one epoch
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [*_args(beton, out), "--resume", "--allow-changes", "--batch-size", "16",
         "run.max_steps=null"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    # The schedule is counted at the new batch: epoch 1 was 2 steps of 16, and epoch 2's 2
    # steps follow. The steps logged keep counting: 4 of 8, then 2 of 16; no row is lost.
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]) == (6, 2, 0)
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in rows] == [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]


def test_resume_path_names_a_run_folder_or_checkpoint(beton, full_run, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, [*_args(beton, out), "run.max_steps=4", "--keep", "2"])
    assert res.exit_code == 0, res.output
    assert (out / "epoch_0001.pt").is_file()
    # `--resume PATH`: the saved config comes from the checkpoint; nothing else is needed.
    res = runner.invoke(
        app, ["train", "pretrain", "--resume", str(out / "epoch_0001.pt"), "run.max_steps=null"]
    )
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out / "last.pt")["step"] == 8
    assert sorted(p.name for p in out.glob("epoch_*.pt")) == ["epoch_0001.pt", "epoch_0002.pt"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(beton, tmp_path):
    # An absurd lr (1e9 x 8 / 256) blows the weights up: the loss is NaN at step 3.
    over = [*TINY, f"data.betons=[{beton}]", f"run.out={tmp_path}", "optim.base_lr=1e9"]
    cfg = load_config(None, [*over, "run.ckpt_every_steps=2", "optim.epochs=4"])
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3 .*Last good checkpoint"):
        pretrain(cfg)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_print_config_reads_no_data(tmp_path):
    res = runner.invoke(
        app,
        ["train", "pretrain", "--config", "demo_cpu", "--beton", str(tmp_path / "none.beton"),
         "--epochs", "3", "--blr", "1e-3", "--batch-size", "64", "--accum", "2",
         "--mask-ratio", "0.5", "--arch", "vit_small_patch16", "--print-config"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    import yaml

    cfg = yaml.safe_load(res.output)
    assert cfg["optim"]["epochs"] == 3 and cfg["optim"]["base_lr"] == 1e-3
    assert cfg["optim"]["batch_size"] == 64 and cfg["optim"]["accum"] == 2
    assert cfg["model"]["mask_ratio"] == 0.5 and cfg["model"]["arch"] == "vit_small_patch16"
    assert cfg["data"]["betons"] == [str(tmp_path / "none.beton")]
    assert not any(tmp_path.iterdir())


def test_configs_are_listed_each_with_its_whole_description():
    """A name per row, its description wrapped under itself on a narrow terminal, never cut."""
    from vicmae.config import builtin_configs

    res = runner.invoke(app, ["train", "configs"])
    assert res.exit_code == 0
    rows: dict[str, list[str]] = {}
    for line in res.output.rstrip().splitlines():
        if line[:1].strip():  # a new row: the name, then its description
            name, _, about = line.partition(" ")
            rows[name] = [about]
        else:  # the description's next line
            rows[name].append(line)
    expected = builtin_configs()
    assert list(rows) == list(expected) and "demo_cpu" in rows
    for name, parts in rows.items():
        assert " ".join(" ".join(parts).split()) == " ".join(expected[name].split()), name
