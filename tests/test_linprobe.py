"""Linear probe and fine-tune on a tiny real .beton, through the real loader."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_data import make_tiny_beton  # the tiny two-class .beton the trainer tests use
from typer.testing import CliRunner

from vicmae.checkpoint import save_checkpoint
from vicmae.config import load_config, to_dict
from vicmae.finetune import FinetuneConfig, finetune, randaugment
from vicmae.linprobe import LinprobeConfig, accuracy, linprobe
from vicmae.model import ViCMAE
from vicmae_cli.train import app

TINY = [
    "model.arch=vit_pico_patch8", "data.resolution=32", "model.decoder_dim=32",
    "model.decoder_depth=1", "model.decoder_heads=2", "model.projector_dims=[64,64,64]",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    beton = make_tiny_beton(root / "tiny.beton")
    torch.manual_seed(0)
    cfg = load_config(None, TINY)
    ckpt = save_checkpoint(
        root / "ckpt" / "checkpoint.pt",
        {"model": ViCMAE(cfg.model).state_dict(), "config": to_dict(cfg), "step": 0},
    )
    return beton, ckpt


def test_accuracy_topk():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    top1, top2 = accuracy(logits, torch.tensor([1, 1, 0]), (1, 2))
    assert top1 == pytest.approx(100 / 3) and top2 == pytest.approx(200 / 3)
    assert accuracy(logits, torch.tensor([1, 1, 0]), (5,))[0] == 100.0  # k capped at classes


def test_linprobe_reports_top1_top5(data):
    beton, ckpt = data
    res = linprobe(
        LinprobeConfig(
            train_beton=str(beton), val_beton=str(beton), checkpoint=str(ckpt),
            num_workers=1, epochs=20, warmup_epochs=2,
        )
    )  # fmt: skip
    assert res["num_train"] == res["num_val"] == 32 and res["num_classes"] == 2
    # The two classes differ in background colour: any encoder's features separate them.
    assert res["top1"] >= 90.0 and res["top5"] == 100.0
    saved = json.loads((ckpt.parent / "linprobe.json").read_text())
    assert saved["top1"] == res["top1"] and saved["random_init"] is False


def test_linprobe_cli_random_init(data, tmp_path):
    beton, ckpt = data
    out = tmp_path / "probe.json"
    res = CliRunner().invoke(
        app,
        ["train", "linprobe", "--beton", str(beton), "--val-beton", str(beton),
         "--checkpoint", str(ckpt), "--random-init", "--out", str(out),
         "epochs=5", "num_workers=1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "random init" in res.output and "top-1" in res.output
    saved = json.loads(out.read_text())
    assert saved["random_init"] is True and 0.0 <= saved["top1"] <= 100.0


def test_randaugment_draws_per_sample_and_can_be_off():
    torch.manual_seed(0)
    # Identical structured images: per-sample draws make the outputs differ from each other.
    img = torch.arange(3 * 32 * 32, dtype=torch.int64).reshape(3, 32, 32) % 251
    batch = img.to(torch.uint8).expand(8, 3, 32, 32).contiguous()
    out = randaugment(FinetuneConfig())(batch)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    assert len({o.numpy().tobytes() for o in out}) > 1
    assert randaugment(FinetuneConfig(randaug_ops=0)) is None


def test_finetune_runs_and_reports(data, tmp_path):
    beton, ckpt = data
    res = finetune(
        FinetuneConfig(
            train_beton=str(beton), val_beton=str(beton), checkpoint=str(ckpt), epochs=2,
            warmup_epochs=1, batch_size=8, num_workers=1, test_views=2, out=str(tmp_path),
        )
    )  # fmt: skip
    assert res["num_val"] == 32 and res["test_views"] == 2
    assert 0.0 <= res["top1"] <= res["top5"] <= 100.0
    state = torch.load(tmp_path / "model.pt", weights_only=False)["model"]
    assert "head.weight" in state and not any(k.startswith("decoder") for k in state)
