"""Video fine-tuning through the fine-tune job, K x J testing, ``vicmae eval``, and several
training files' label spaces (issue 17 items 3-5), on tiny real .beton files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from media import make_tiny_beton, tiny_pretrain_checkpoint, webp
from typer.testing import CliRunner

from vicmae.config import AugmentConfig, load_config
from vicmae.engine.checkpoint import load_checkpoint
from vicmae.engine.label_space import label_space
from vicmae.jobs.finetune import NO_WEIGHT_DECAY, Classifier, FinetuneLoss
from vicmae.model.video_vit import inflate
from vicmae.model.vit import ViTEncoder
from vicmae_cli.train import app
from vicmae_data.format.beton import Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.write.beton_writer import write_beton

runner = CliRunner()
SHORT = ["--batch-size", "8", "--epochs", "2", "optim.warmup_epochs=1", "data.num_workers=1",
         "run.progress=false"]  # fmt: skip
ONE = ["--batch-size", "8", "--epochs", "1", "optim.warmup_epochs=0", "data.num_workers=1",
       "run.progress=false"]  # fmt: skip
CLIPS = ["data.sampling=clip", "data.clip_frames=4", "data.clip_stride=1", "model.tubelet=2"]


def classes_beton(path, n: int, classes: int, dataset: str, size: int = 40):
    """``n`` 4-frame clips of ``classes`` classes named ``{dataset}{k}`` (the class in the
    background colour's level), in a dataset called ``dataset``."""
    rng = np.random.default_rng(classes)
    samples = []
    for i in range(n):
        c = i % classes
        clip = []
        for t in range(4):
            a = np.full((size, size, 3), 40 + 50 * c, np.uint8)
            a[(4 * t) % 30 : (4 * t) % 30 + 10, 5:15] = 255
            a = (a + rng.integers(0, 20, a.shape)).clip(0, 255).astype(np.uint8)
            clip.append(webp(a))
        meta = {"source": f"{dataset}{i}", "class_name": f"{dataset}{c}", "dataset": dataset,
                "num_frames": 4, "height": size, "width": size}  # fmt: skip
        samples.append(Sample(FrameList(clip, size, size), c, meta))
    return write_beton(path, samples)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("videoft")
    beton = make_tiny_beton(root / "tiny.beton")
    ckpt = tiny_pretrain_checkpoint(root / "pretrain" / "last.pt")
    return root, beton, ckpt


# --- augmentation of clips --------------------------------------------------------------


def _clips(b: int = 6, t: int = 4, hw: int = 16) -> torch.Tensor:
    """(B, T, 3, H, W): sample i is 10 * i + frame everywhere (so origins can be read)."""
    base = torch.arange(b, dtype=torch.float32)[:, None] * 10 + torch.arange(t)[None, :]
    return base[:, :, None, None, None].expand(b, t, 3, hw, hw).clone()


def test_erasing_cuts_one_box_through_every_frame() -> None:
    aug = AugmentConfig(reprob=1.0, mixup=0.0, cutmix=0.0, label_smoothing=0.0)
    loss = FinetuneLoss(aug, num_classes=3, device=torch.device("cpu"), clips=True)
    torch.manual_seed(0)
    x = _clips()
    out, _ = loss.augment(x.clone(), torch.zeros(6, dtype=torch.long))
    for i in range(6):
        hit = out[i] != x[i]  # (T, 3, H, W)
        box = hit[0, 0]
        assert box.any() and not box.all()
        assert all(torch.equal(hit[t, c], box) for t in range(4) for c in range(3))
        # per-pixel noise, drawn for every frame (as mae_st's cube erasing)
        assert not torch.equal(out[i, 0, 0][box], out[i, 1, 0][box])


def test_cutmix_pastes_one_box_of_the_partner_through_every_frame() -> None:
    aug = AugmentConfig(reprob=0.0, mixup=0.0, cutmix=1.0, label_smoothing=0.0)
    loss = FinetuneLoss(aug, num_classes=3, device=torch.device("cpu"), clips=True)
    x = _clips()
    for seed in range(5):
        np.random.seed(seed)  # timm's Mixup draws lambda and the box from numpy
        out, y = loss.augment(x.clone(), torch.arange(6) % 3)
        assert y.shape == (6, 3)
        for i in range(6):
            partner = 5 - i  # mode "batch": the flipped batch
            pasted = out[i] == x[partner]  # (T, 3, H, W)
            box = pasted[0, 0]
            assert all(torch.equal(pasted[t, c], box) for t in range(4) for c in range(3))
            assert torch.equal(out[i][:, :, ~box], x[i][:, :, ~box])  # the rest untouched


def test_video_classifier_groups_for_weight_and_layer_decay() -> None:
    from timm.optim import param_groups_layer_decay

    enc = ViTEncoder.from_arch("vit_pico_patch8", img_size=32).learn_pos_embed()  # depth 2
    model = Classifier(inflate(enc, 4, 2), 3, head_dropout=0.5)
    groups = param_groups_layer_decay(model, 0.05, NO_WEIGHT_DECAY, layer_decay=0.5)
    name = {id(p): n for n, p in model.named_parameters()}
    scale = {name[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    decay = {name[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}
    assert len(scale) == len(name)
    stem = 0.5**3
    for key in ("encoder.pos_embed_temporal", "encoder.pos_embed", "encoder.cls_token",
                "encoder.patch_embed.proj.weight"):  # fmt: skip
        assert scale[key] == stem, key
    assert decay["encoder.pos_embed_temporal"] == decay["encoder.pos_embed"] == 0.0
    assert decay["encoder.patch_embed.proj.weight"] == 0.05  # a Conv3d kernel decays
    assert scale["encoder.blocks.1.mlp.fc1.weight"] == 0.5 and scale["head.weight"] == 1.0


# --- the job ----------------------------------------------------------------------------


@pytest.mark.slow  # ~25 s on 2 idle cores: every test view is a loader compiled anew
def test_video_finetune_tests_k_by_j_views_and_eval_gives_the_same(data) -> None:
    root, beton, ckpt = data
    out = root / "ft"
    res = runner.invoke(
        app,
        ["train", "finetune", "-b", str(beton), "--val-beton", str(beton), "--checkpoint",
         str(ckpt), "--out", str(out), *SHORT, *CLIPS, "test.clips=2", "test.crops=1",
         "model.head_dropout=0.5", "optim.base_lr=1e-2"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "2 x 1 views: top-1" in res.output
    result = json.loads((out / "result.json").read_text())
    assert result["test_views"] == [2, 1] and result["test_samples"] == 32
    assert result["val_samples"] == 32 and result["label_offsets"] == [0]
    record = json.loads((out / "classifier.json").read_text())
    assert record["video"] == {"sampling": "clip", "frames": 4, "stride": 1, "tubelet": 2}
    state = load_checkpoint(out / "last.pt")["model"]
    assert state["encoder.pos_embed_temporal"].shape == (1, 2, 64)  # 4 frames / tubelet 2
    assert state["encoder.patch_embed.proj.weight"].shape[2:] == (2, 8, 8)  # tubelets
    assert not torch.equal(state["encoder.pos_embed_temporal"], torch.zeros(1, 2, 64))
    # vicmae eval on the final checkpoint: the same model, the same 2 x 1 views, the same
    # figures as the job's own test.
    res = runner.invoke(app, ["eval", "--checkpoint", str(out / "last.pt"), "--beton",
                              str(beton), "--workers", "1", "--batch-size", "8"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "2 x 1 views" in res.output
    got = json.loads((out / f"eval_{beton.stem}.json").read_text())
    for key in ("test_top1", "test_mean_class_acc", "test_loss", "test_samples"):
        assert got[key] == pytest.approx(result[key], rel=1e-5), key
    again = runner.invoke(app, ["eval", "--checkpoint", str(out / "last.pt"), "--beton",
                                str(beton), "--clips", "1"])  # fmt: skip
    assert again.exit_code != 0 and "exists; pass --force" in again.output


@pytest.mark.slow  # ~25 s on 2 idle cores: a fine-tune, an eval and two probes
def test_two_training_files_head_offsets_and_evaluation(data, tmp_path) -> None:
    _, _, ckpt = data
    a = classes_beton(tmp_path / "a.beton", 16, 2, "alpha")
    b = classes_beton(tmp_path / "b.beton", 16, 4, "beta")
    c = classes_beton(tmp_path / "c.beton", 8, 2, "gamma")
    space = label_space([a, b])
    assert [f.offset for f in space.files] == [0, 2] and space.num_classes == 6
    assert space.offset_for(b) == 2 and space.offset_for(a) == 0
    # Fine-tune on both, validated on the second dataset (its labels + 2).
    out = tmp_path / "ft"
    res = runner.invoke(
        app,
        ["train", "finetune", "-b", str(a), "-b", str(b), "--val-beton", str(b),
         "--checkpoint", str(ckpt), "--out", str(out), *ONE, "augment.mixup=0",
         "augment.cutmix=0"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads((out / "result.json").read_text())
    assert result["num_classes"] == 6 and result["label_offsets"] == [0, 2]
    assert load_checkpoint(out / "last.pt")["model"]["head.weight"].shape[0] == 6
    record = json.loads((out / "classifier.json").read_text())
    assert [f["offset"] for f in record["labels"]["files"]] == [0, 2]
    # Evaluation checks a file against the recorded label space.
    res = runner.invoke(app, ["eval", "--checkpoint", str(out / "last.pt"), "--beton", str(a),
                              "--workers", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((out / "eval_a.json").read_text())["label_offset"] == 0
    res = runner.invoke(app, ["eval", "--checkpoint", str(out / "last.pt"), "--beton", str(c)])
    assert res.exit_code != 0
    assert "classes are not those of any file the model was trained on" in res.output
    # The linear probe on both files, through the loader and on cached features.
    for extra in ([], ["probe.cached=true"]):
        probe = tmp_path / f"probe{len(extra)}"
        res = runner.invoke(
            app,
            ["train", "linprobe", "-b", str(a), "-b", str(b), "--val-beton", str(b),
             "--checkpoint", str(ckpt), "--out", str(probe), *ONE, *extra],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        result = json.loads((probe / "result.json").read_text())
        assert result["num_classes"] == 6 and result["label_offsets"] == [0, 2]
        assert result["val_samples"] == 16


class _Always(torch.nn.Module):
    """Answers class ``k`` of 6 for every input."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.full((len(x),), self.k), 6).float() * 10


def test_evaluation_scores_a_file_at_its_offset(tmp_path) -> None:
    """File b's 4 classes sit at 2..5 of the head: a model always answering class 2 is
    right on b's class 0 (a quarter of it) only when the offset is applied."""
    from vicmae.config import FinetuneConfig
    from vicmae.engine.evaluation import ClassifierEval
    from vicmae.engine.setup import start_run

    b = classes_beton(tmp_path / "b.beton", 16, 4, "beta")
    cfg = load_config(None, ["model.arch=vit_pico_patch8", "data.resolution=32",
                             "data.num_workers=1", f"run.out={tmp_path / 'run'}"],
                      cls=FinetuneConfig)  # fmt: skip
    with start_run(cfg, "finetune") as run:
        at2 = ClassifierEval(run, str(b), 32, 8, offset=2)
        assert at2(_Always(2), 0)["val_top1"] == 25.0
        assert at2(_Always(0), 0)["val_top1"] == 0.0  # label 0 of b is class 2 of the head
        assert ClassifierEval(run, str(b), 32, 8)(_Always(0), 0)["val_top1"] == 25.0
