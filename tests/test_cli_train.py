"""`vicmae` through Typer's CLI runner: commands listed, one-line errors, plot, export."""

from __future__ import annotations

import pytest
import torch
from media import make_tiny_beton
from PIL import Image
from typer.testing import CliRunner

import vicmae
from vicmae.config import load_config, to_dict
from vicmae.engine.checkpoint import save_checkpoint
from vicmae.engine.metrics import MetricsLogger
from vicmae.model.vicmae import ViCMAE
from vicmae_cli.train import app

runner = CliRunner()


def _one_line_error(res, needle: str) -> None:
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert "Traceback" not in text
    assert needle in text
    assert len(text.splitlines()) == 1, text


def test_help_lists_commands_and_version():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    assert "train" in res.output and "export" in res.output and "plot" in res.output
    res = runner.invoke(app, ["train", "--help"])
    for name in ("pretrain", "linprobe", "finetune"):
        assert name in res.output
    res = runner.invoke(app, ["train", "pretrain", "--help"])
    assert "Example" in res.output and "--resume" in res.output
    assert vicmae.__version__ in runner.invoke(app, ["--version"]).output


def test_missing_beton_is_a_one_line_error(tmp_path):
    res = runner.invoke(app, ["train", "pretrain", "--beton", str(tmp_path / "nope.beton")])
    _one_line_error(res, "nope.beton: no such .beton file")
    res = runner.invoke(app, ["train", "pretrain", "--beton", str(tmp_path / "x.beton:0.3")])
    _one_line_error(res, "x.beton: no such .beton file")
    res = runner.invoke(app, ["train", "pretrain", "--out", str(tmp_path)])
    _one_line_error(res, "no .beton given")
    res = runner.invoke(app, ["train", "linprobe", "--beton", "a.beton", "--val-beton", "b.beton"])
    _one_line_error(res, "a.beton: no such .beton file")
    junk = tmp_path / "junk.beton"
    junk.write_bytes(b"not a beton file")
    res = runner.invoke(app, ["train", "pretrain", "--beton", str(junk), "--out", str(tmp_path)])
    _one_line_error(res, "junk.beton: not a readable .beton file")
    assert not (tmp_path / "config.yaml").exists()  # failed before any set-up


def test_bad_override_is_a_one_line_error(tmp_path):
    beton = make_tiny_beton(tmp_path / "a.beton", n=2)
    res = runner.invoke(app, ["train", "pretrain", "--beton", str(beton), "optim.lr=1"])
    _one_line_error(res, "unknown key 'optim.lr'")
    res = runner.invoke(app, ["train", "pretrain", "--beton", str(beton), "optim.epochs=x"])
    _one_line_error(res, "optim.epochs: expected an integer")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("optim: [1, 2\n")
    res = runner.invoke(app, ["train", "pretrain", "--beton", str(beton), "--config", str(cfg)])
    _one_line_error(res, "not valid YAML")


def test_mix_and_crc_keys_are_printed_set_and_checked(tmp_path):
    """The paper recipe's usage line, as written: both files concatenated, 512 per forward."""
    args = ["train", "pretrain", "--config", "paper", "--beton", "k400.beton", "--beton",
            "in1k.beton", "--print-config"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "  mix: concat\n  check_crc: false\n" in res.output
    assert "  micro_batch: 512\n" in res.output
    res = runner.invoke(app, [*args[:-1], "--print-config", "data.mix=weights",
                              "data.check_crc=true"])  # fmt: skip
    assert "  mix: weights\n  check_crc: true\n" in res.output
    beton = make_tiny_beton(tmp_path / "a.beton", n=2)
    res = runner.invoke(app, ["train", "pretrain", "--beton", str(beton), "data.mix=both"])
    _one_line_error(res, "data.mix: 'both' is not one of weights, concat")
    res = runner.invoke(app, ["train", "pretrain", "--config", "paper", "--beton",
                              f"{beton}:0.3", "--beton", str(beton)])  # fmt: skip
    _one_line_error(res, "a.beton:0.3 has a weight, but data.mix=concat")


def test_plot_draws_pngs(tmp_path):
    with MetricsLogger(tmp_path, total_steps=5, progress=False, tensorboard=False) as ml:
        for s in range(1, 6):
            ml.log(s, {"loss": 1 / s, "loss_recon": 0.9 / s, "loss_contrastive": 2.0,
                       "samples_per_s": 100.0 + s, "data_wait_pct": 5.0})  # fmt: skip
    res = runner.invoke(app, ["plot", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for name in ("loss.png", "throughput.png"):
        with Image.open(tmp_path / "plots" / name) as im:
            assert im.format == "PNG" and im.size[0] > 100
    _one_line_error(runner.invoke(app, ["plot", str(tmp_path / "empty")]), "no metrics.jsonl")


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    cfg = load_config(None, ["model.arch=vit_pico_patch8", "data.resolution=32"])
    model = ViCMAE(cfg.model)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(cfg), "step": 0})
    return path, model


def test_export_timm(tiny_checkpoint, tmp_path):
    path, model = tiny_checkpoint
    out = tmp_path / "vit.pth"
    res = runner.invoke(app, ["export", "timm", "--checkpoint", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert torch.equal(state["patch_embed.proj.weight"], model.encoder.patch_embed.proj.weight)
    assert not any(k.startswith("decoder") for k in state)
    res = runner.invoke(app, ["export", "timm", "--checkpoint", "no.pt", "--out", str(out)])
    _one_line_error(res, "no.pt: no such checkpoint")
