"""Linear probe and fine-tune (paper Tables 6 and 7) on a tiny real .beton, through the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from media import TINY_MODEL, make_tiny_beton
from PIL import Image
from typer.testing import CliRunner

from vicmae.config import AugmentConfig, FinetuneConfig, LinprobeConfig, load_config, to_dict
from vicmae.engine.checkpoint import load_checkpoint, save_checkpoint
from vicmae.engine.evaluation import accuracy, classification_metrics, encoder_features
from vicmae.engine.step_info import StepInfo
from vicmae.jobs.finetune import Classifier, FinetuneLoss
from vicmae.model.vicmae import ViCMAE
from vicmae.model.vit import ViTEncoder
from vicmae_cli.train import app
from vicmae_data import to_model_input
from vicmae_data.load.batch import Batch

TINY = [*TINY_MODEL, "data.resolution=32"]
SHORT = ["--batch-size", "8", "--epochs", "3", "optim.warmup_epochs=1", "data.num_workers=1",
         "run.progress=false", "run.log_every_steps=2"]  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    beton = make_tiny_beton(root / "tiny.beton")
    torch.manual_seed(0)
    cfg = load_config(None, TINY)
    ckpt = save_checkpoint(
        root / "pretrain" / "last.pt",
        {"kind": "pretrain", "model": ViCMAE(cfg.model).state_dict(), "config": to_dict(cfg),
         "step": 0},
    )  # fmt: skip
    return beton, ckpt


def _rows(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_defaults_are_the_papers_protocols():
    p, f = LinprobeConfig(), FinetuneConfig()
    assert (p.optim.name, p.optim.base_lr, p.optim.weight_decay, p.optim.momentum) == (
        "sgd", 0.1, 0.0, 0.9)  # fmt: skip
    assert (p.optim.batch_size, p.optim.epochs, p.optim.warmup_epochs) == (4096, 90, 10)
    assert p.model.pool == "cls" and not p.probe.cached
    assert (f.optim.base_lr, f.optim.batch_size, f.optim.layer_decay) == (3e-3, 1024, 0.65)
    assert f.optim.betas == (0.9, 0.999) and f.model.drop_path == 0.1 and f.model.pool == "cls"
    a = f.augment
    assert (a.mixup, a.cutmix, a.label_smoothing, a.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert a.randaugment == "rand-m9-mstd0.5-inc1" and f.model.learn_pos_embed


def test_accuracy_and_top5_only_beyond_five_classes():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    top1, top2 = accuracy(logits, torch.tensor([1, 1, 0]), (1, 2))
    assert top1 == pytest.approx(100 / 3) and top2 == pytest.approx(200 / 3)
    m = classification_metrics(logits.softmax(1), torch.tensor([1, 1, 0]))
    assert set(m) == {"val_top1", "val_mean_class_acc", "val_loss", "val_samples"}
    # 8 samples, 7 classes: the last is wrong at top-1, its label 2nd; the 7th is 6th.
    probs = torch.eye(7)[[0, 1, 2, 3, 4, 5, 6, 0]] * 0.5 + 0.5 / 7
    probs[7, 1] += 0.1
    probs[6] = torch.tensor([0.3, 0.2, 0.15, 0.14, 0.12, 0.05, 0.04])
    m = classification_metrics(probs, torch.tensor([0, 1, 2, 3, 4, 5, 6, 1]))
    assert m["val_top1"] == pytest.approx(600 / 8) and m["val_top5"] == pytest.approx(700 / 8)


def test_class_token_features_are_the_default():
    torch.manual_seed(0)
    enc = ViTEncoder.from_arch("vit_pico_patch8", 32).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = enc.forward_features(x)
    assert torch.equal(encoder_features(enc, x, "cls"), tokens[:, 0])
    assert torch.allclose(encoder_features(enc, x, "mean"), tokens[:, 1:].mean(1))


def test_linprobe_through_the_loader_learns_and_is_a_run(data, tmp_path):
    beton, ckpt = data
    out = tmp_path / "probe"
    res = runner.invoke(
        app,
        ["train", "linprobe", "-b", str(beton), "--val-beton", str(beton), "--checkpoint",
         str(ckpt), "--out", str(out), *SHORT, "optim.base_lr=3.0"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "top-1" in res.output and "top-5" not in res.output  # 2 classes
    result = json.loads((out / "result.json").read_text())
    # The classes differ in background colour: the frozen random encoder's class token
    # separates them once the head is trained; an untrained head sits near 50%.
    assert result["val_top1"] >= 90.0 and result["val_samples"] == 32
    # Two balanced classes: the mean per-class accuracy is reported and is the top-1.
    assert result["val_mean_class_acc"] == pytest.approx(result["val_top1"])
    assert result["num_classes"] == 2 and result["config"]["model"]["pool"] == "cls"
    rows = _rows(out)
    assert [r["step"] for r in rows if "val_top1" in r] == [4, 8, 12]  # every epoch
    best = load_checkpoint(out / "best.pt")
    assert best["best"]["key"] == "val_top1" and set(best) <= {
        "kind", "model", "config", "step", "epoch", "best"}  # fmt: skip
    head = {k for k in load_checkpoint(out / "last.pt")["model"] if k.startswith("head.")}
    # BatchNorm without affine (statistics only), then Linear.
    bn = {"head.0.running_mean", "head.0.running_var", "head.0.num_batches_tracked"}
    assert head == bn | {"head.1.weight", "head.1.bias"}
    res = runner.invoke(app, ["plot", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("loss.png", "throughput.png", "accuracy.png"):
        with Image.open(out / "plots" / name) as im:
            assert im.format == "PNG"


def test_linprobe_cached_features_option(data, tmp_path):
    beton, ckpt = data
    out = tmp_path / "cached"
    res = runner.invoke(
        app,
        ["train", "linprobe", "-b", str(beton), "--val-beton", str(beton), "--checkpoint",
         str(ckpt), "--out", str(out), "--epochs", "20", "optim.warmup_epochs=2",
         "probe.cached=true", "data.num_workers=1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads((out / "result.json").read_text())
    assert result["val_top1"] >= 90.0
    assert [r["epoch"] for r in _rows(out)] == [float(e) for e in range(1, 21)]
    assert runner.invoke(app, ["plot", str(out)]).exit_code == 0


def test_finetune_learns_position_embeddings_and_is_a_run(data, tmp_path):
    beton, ckpt = data
    out = tmp_path / "ft"
    res = runner.invoke(
        app,
        ["train", "finetune", "-b", str(beton), "--val-beton", str(beton), "--checkpoint",
         str(ckpt), "--out", str(out), *SHORT, "optim.base_lr=1e-2"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads((out / "result.json").read_text())
    assert result["val_samples"] == 32 and result["test_views"] == [1, 1]
    assert "test_top1" not in result  # images: the centre crop only, no K x J test
    assert result["val_mean_class_acc"] == pytest.approx(result["val_top1"])  # balanced
    assert "val_top5" not in result
    state = load_checkpoint(out / "last.pt")["model"]
    init = load_checkpoint(ckpt)["model"]["encoder.pos_embed"]
    assert not torch.equal(state["encoder.pos_embed"], init)  # learned, not fixed
    assert "head.weight" in state and not any(k.startswith("decoder") for k in state)
    assert [r["step"] for r in _rows(out) if "val_top1" in r] == [4, 8, 12]
    assert runner.invoke(app, ["plot", str(out)]).exit_code == 0


def test_layer_decay_groups_follow_maes_rule():
    from timm.optim import param_groups_layer_decay

    enc = ViTEncoder.from_arch("vit_pico_patch8", img_size=32).learn_pos_embed()  # depth 2
    model = Classifier(enc, 3)
    groups = param_groups_layer_decay(
        model, 0.05, ("encoder.cls_token", "encoder.pos_embed"), layer_decay=0.5
    )
    name = {id(p): n for n, p in model.named_parameters()}
    scale = {name[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    decay = {name[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}
    assert scale["encoder.pos_embed"] == scale["encoder.patch_embed.proj.weight"] == 0.5**3
    assert scale["encoder.blocks.0.attn.qkv.weight"] == 0.5**2
    assert scale["encoder.blocks.1.mlp.fc1.weight"] == 0.5
    assert scale["encoder.norm.weight"] == scale["head.weight"] == 1.0
    assert decay["encoder.pos_embed"] == decay["encoder.cls_token"] == 0.0
    assert decay["head.weight"] == 0.05 and decay["head.bias"] == 0.0


def test_finetune_augmentations_are_timms_and_draw_per_sample():
    torch.manual_seed(0)
    loss = FinetuneLoss(AugmentConfig(), num_classes=4, device=torch.device("cpu"), clips=False)
    m = loss.mixup
    assert (m.mixup_alpha, m.cutmix_alpha, m.switch_prob) == (0.8, 1.0, 0.5)
    assert m.label_smoothing == 0.1
    # RandAugment with magnitude noise, per sample: identical inputs come out different.
    from vicmae.engine.randaugment import ClipRandAugment

    ra = ClipRandAugment(AugmentConfig().randaugment, 32)
    img = (np.arange(32 * 32 * 3) % 251).reshape(1, 32, 32, 3).astype(np.uint8)
    out = [ra(img, (0, 0, 0, i)) for i in range(8)]
    assert out[0].shape == (1, 32, 32, 3) and out[0].dtype == np.uint8
    assert len({o.tobytes() for o in out}) > 4
    assert loss.erase.probability == 0.25 and loss.erase.mode == "pixel"


def test_finetune_loss_erases_a_patch_of_every_sample_it_is_given():
    """Random erasing, ours in the loss's own pass: at p=1 each sample the model sees has a
    patch of noise on the normalised grey it was given; off, the sample is untouched."""
    batch = Batch(torch.full((4, 1, 3, 32, 32), 128, dtype=torch.uint8),
                  torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.bool))  # fmt: skip
    grey = to_model_input(batch, "cpu", image_augment=False)[:, 0]  # (4, 3, 32, 32)
    seen = []

    def model(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return torch.zeros(len(x), 4, requires_grad=True)

    plain = dict(randaugment="", mixup=0.0, cutmix=0.0, label_smoothing=0.0)
    for reprob in (1.0, 0.0):
        aug = AugmentConfig(**plain, reprob=reprob)
        loss = FinetuneLoss(aug, 4, torch.device("cpu"), clips=False)
        loss(model, batch, StepInfo(0, 0, 0, 0, 0))
    erased, untouched = seen
    changed = (erased != grey).any(dim=1)  # (4, 32, 32): pixels the noise replaced
    assert all(0 < int(c.sum()) < 32 * 32 for c in changed)  # a patch of each, not all
    assert torch.equal(untouched, grey)
