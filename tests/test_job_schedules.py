"""The schedules each job hands the engine, read back from the metrics it logged per step.

Every other end-to-end test switches the contrastive loss on at epoch 0 and asserts only
pretraining's lr curve, so a schedule built in the wrong unit or without its warm-up would
train silently. Here: lambda per step from a run that switches it on at epoch 1, and the lr
column of fine-tuning and of both linear-probe paths against warm-up + cosine computed
here from its definition (not by calling ``warmup_cosine``, which is checked against the
same definition).
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path

import pytest
from media import TINY_MODEL, make_tiny_beton

from vicmae.config import FinetuneConfig, LinprobeConfig, load_config
from vicmae.engine.checkpoint import load_checkpoint
from vicmae.engine.schedules import warmup_cosine
from vicmae.jobs.finetune import finetune
from vicmae.jobs.linprobe import linprobe
from vicmae.jobs.pretrain import pretrain

TINY = ["model.arch=vit_pico_patch8", "data.resolution=32", "data.num_workers=1",
        "run.progress=false", "run.log_every_steps=1"]  # fmt: skip
PRETRAIN = [
    *TINY, *TINY_MODEL, "optim.batch_size=8", "optim.epochs=2",
    "optim.warmup_epochs=1", "optim.base_lr=1e-2", "loss.contrastive_start_epoch=1",
    "loss.contrastive_weight=0.5",
]  # fmt: skip
# 32 samples in batches of 8: 4 steps an epoch; 1 warm-up epoch of 3.
EVAL = [*TINY, "optim.batch_size=8", "optim.epochs=3", "optim.warmup_epochs=1",
        "optim.base_lr=0.256", "optim.min_lr=0.001"]  # fmt: skip


@pytest.fixture(scope="module")
def beton(tmp_path_factory) -> Path:
    return make_tiny_beton(tmp_path_factory.mktemp("data") / "tiny.beton")


def _rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "lr" in r]  # training rows (validation rows have no lr)


def reference_lr(peak: float, floor: float, total: int, warmup: int) -> list[float]:
    """Linear warm-up from 0 (step 0) towards ``peak``, then half a cosine from ``peak``
    (the first step after warm-up) down to ``floor`` one step past the end."""
    out = [peak * s / warmup for s in range(warmup)]  # (none when warmup is 0)
    rest = total - warmup
    out += [floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * s / rest)) for s in range(rest)]
    return out


def assert_warmup_cosine(lrs: list[float], peak: float, floor: float, warmup: int) -> None:
    """0 at the first step, ``peak`` where warm-up ends, decreasing after; and every value."""
    assert lrs[0] == 0.0
    assert lrs[warmup] == pytest.approx(peak, rel=1e-12) and max(lrs) == lrs[warmup]
    assert all(a < b for a, b in pairwise(lrs[: warmup + 1]))
    assert all(a > b for a, b in pairwise(lrs[warmup:]))
    assert lrs == pytest.approx(reference_lr(peak, floor, len(lrs), warmup), rel=1e-12)


def test_contrastive_weight_switches_on_at_its_epoch_not_its_step(beton, tmp_path):
    """Table 5's lambda is a function of the epoch: 0 for epoch 0's 4 steps, then the weight.

    Each row's loss is recomputed from its parts with that lambda, so the value the loss used
    is checked, not only the logged column.
    """
    cfg = load_config(None, [*PRETRAIN, f"data.betons=[{beton}]", f"run.out={tmp_path}"])
    assert pretrain(cfg).step == 8
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["epoch"] for r in rows] == [s / 4 for s in range(1, 9)]  # fractional epochs
    assert [r["lambda"] for r in rows] == [0.0] * 4 + [0.5] * 4
    groups = load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"]
    assert all("lr_scale" not in g and g["lr"] == rows[-1]["lr"] for g in groups)
    for r in rows:
        assert r["loss_contrastive"] > 0.1  # a lambda of 0.5 moves the loss visibly
        want = r["loss_recon"] + r["lambda"] * r["loss_contrastive"]
        assert r["loss"] == pytest.approx(want, rel=1e-5), r["step"]


def test_finetune_lr_warms_up_then_follows_the_cosine(beton, tmp_path):
    cfg = load_config(
        None, [*EVAL, f"data.betons=[{beton}]", f"run.out={tmp_path}", "augment.randaugment="],
        cls=FinetuneConfig,
    )  # fmt: skip
    assert finetune(cfg)["step"] == 12
    lrs = [r["lr"] for r in _rows(tmp_path)]
    assert len(lrs) == 12
    assert_warmup_cosine(lrs, peak=0.256 * 8 / 256, floor=0.001, warmup=4)
    # The optimiser ran at it: each layer-decay group at the logged lr x its scale (0.65^k).
    groups = load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"]
    assert len({g["lr_scale"] for g in groups}) > 2
    for g in groups:
        assert g["lr"] == pytest.approx(lrs[-1] * g["lr_scale"], rel=1e-12)


def test_linprobe_lr_warms_up_then_follows_the_cosine(beton, tmp_path):
    """The paper's protocol: the head trained through the loader, one row per step."""
    cfg = load_config(None, [*EVAL, f"data.betons=[{beton}]", f"run.out={tmp_path}"],
                      cls=LinprobeConfig)  # fmt: skip
    assert linprobe(cfg)["step"] == 12
    lrs = [r["lr"] for r in _rows(tmp_path)]
    assert len(lrs) == 12
    assert_warmup_cosine(lrs, peak=0.256 * 8 / 256, floor=0.001, warmup=4)


def test_cached_linprobe_lr_warms_up_then_follows_the_cosine(beton, tmp_path):
    """``probe.cached=true`` logs once an epoch: one step an epoch (the batch holds all 32
    samples) makes that row the step's lr. Warm-up is 2 of 5 epochs."""
    over = [*EVAL, "optim.batch_size=32", "optim.epochs=5", "optim.warmup_epochs=2",
            "probe.cached=true", f"data.betons=[{beton}]", f"run.out={tmp_path}"]  # fmt: skip
    linprobe(load_config(None, over, cls=LinprobeConfig))
    rows = _rows(tmp_path)
    assert [r["epoch"] for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert_warmup_cosine([r["lr"] for r in rows], peak=0.256 * 32 / 256, floor=0.001, warmup=2)


def test_warmup_cosine_without_warmup_starts_at_the_peak():
    """The default (no warm-up epochs): the cosine from its first step, as MAE's
    adjust_learning_rate does after warm-up."""
    lr = warmup_cosine(0.5, 0.1, epochs=2, steps_per_epoch=2)
    assert lr.tolist() == pytest.approx(reference_lr(0.5, 0.1, 4, 0), rel=1e-12)
    assert lr[0] == 0.5
