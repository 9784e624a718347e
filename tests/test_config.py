"""Config: YAML + dotted overrides, type checks with clear errors, frozen; schedules."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import ClassVar

import numpy as np
import pytest

from vicmae.config import (
    JOB_CONFIGS,
    ConfigError,
    FinetuneConfig,
    OptimConfig,
    TrainConfig,
    dump_yaml,
    load_config,
    to_dict,
)
from vicmae.engine.batching import accumulation
from vicmae.engine.schedules import lambda_schedule, per_step, scaled_lr, warmup_cosine


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert cfg.optim.base_lr == 1.5e-4 and cfg.optim.weight_decay == 0.05
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.batch_size == 4096
    assert (cfg.optim.epochs, cfg.optim.warmup_epochs) == (800, 40)
    assert (cfg.loss.contrastive_weight, cfg.loss.contrastive_start_epoch) == (0.025, 200)
    assert cfg.model.pooling == "mean" and cfg.model.contrastive == "ntxent"
    assert cfg.model.mask_ratio == 0.5  # the paper states none: the authors' code's value


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "optim:\n  base_lr: 3.0e-4\n  epochs: 5\n  warmup_epochs: 1\n"
        "model:\n  arch: vit_pico_patch8\n"
    )
    cfg = load_config(
        path,
        ["optim.base_lr=1e-4", "model.img_size=32", "optim.betas=[0.8,0.9]",
         "data.betons=[a.beton, b.beton:0.3]", "run.max_steps=null", "optim.clip_grad=1"],
    )  # fmt: skip
    assert cfg.optim.base_lr == 1e-4  # "1e-4" is a string to PyYAML; still a float here
    assert cfg.optim.epochs == 5 and cfg.model.arch == "vit_pico_patch8"
    assert cfg.optim.betas == (0.8, 0.9) and cfg.optim.clip_grad == 1.0
    assert cfg.data.betons == ("a.beton", "b.beton:0.3")
    # The data resolution is resolved from (and into) the model's input size.
    assert cfg.data.resolution == 32 and cfg.model.img_size == 32
    # Round trip: the dict form (what checkpoints hold) rebuilds the same config.
    assert load_config(None, [], base=to_dict(cfg)) == cfg
    assert "vit_pico_patch8" in dump_yaml(cfg)


def test_builtin_demo_config():
    cfg = load_config("demo_cpu", ["data.betons=[a.beton]"])
    assert cfg.model.arch == "vit_pico_patch8" and cfg.model.img_size == 64
    assert cfg.optim.batch_size == 64 and cfg.optim.epochs == 400
    # The demo's lift comes from the contrastive term, on from the first step.
    assert cfg.loss.contrastive_start_epoch == 0 and cfg.loss.contrastive_weight == 2.0


def test_data_resolution_sets_the_model_input():
    cfg = load_config(None, ["model.arch=vit_pico_patch8", "data.resolution=64"])
    assert cfg.model.img_size == 64


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.base_lrr=1", "unknown key 'optim.base_lrr'"),
        ("optimizer.lr=1", "unknown key 'optimizer'"),
        ("optim.epochs=ten", "optim.epochs: expected an integer"),
        ("optim.epochs=2.5", "optim.epochs: expected an integer"),
        ("run.compile=maybe", "run.compile: expected true/false"),
        ("run.precision=fp8", "run.precision: 'fp8' is not one of"),
        ("optim.betas=[0.9]", "optim.betas: expected 2 values"),
        ("model.arch=vit_nope", "unknown arch"),
        ("optim.base_lr", "is not key=value"),
        ("optim.warmup_epochs=-1", "optim.warmup_epochs=-1.0 must not be negative"),
    ],
)
def test_bad_key_or_value_is_a_clear_error(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(None, [override])


def test_bad_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_config_is_frozen():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.base_lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model = None  # type: ignore[misc]


def test_default_out_names_each_job_by_its_kind():
    """A job without --out writes runs/KIND (an evaluation: beside its checkpoint), so a
    new evaluation job gets its own folder, not another job's."""
    for kind, cls in JOB_CONFIGS.items():
        assert load_config(None, [], cls=cls).run.out == os.path.join("runs", kind)

    @dataclasses.dataclass(frozen=True)
    class EvalConfig(FinetuneConfig):  # what a new evaluation job declares
        kind: ClassVar[str] = "eval"

    ckpt = os.path.join("runs", "k400", "last.pt")
    cfg = load_config(None, [f"model.checkpoint={ckpt}"], cls=EvalConfig)
    assert cfg.run.out == os.path.join("runs", "k400", "eval")
    cfg = load_config(None, [f"model.checkpoint={ckpt}", "model.random_init=true"], cls=EvalConfig)
    assert cfg.run.out == os.path.join("runs", "k400", "eval_random_init")


def test_accumulation_makes_the_effective_batch():
    assert accumulation(OptimConfig(batch_size=4096, micro_batch=64), 8) == (64, 8)
    assert accumulation(OptimConfig(batch_size=32), 1) == (32, 1)
    with pytest.raises(ConfigError, match="not a multiple"):
        accumulation(OptimConfig(batch_size=100, micro_batch=64), 1)
    with pytest.raises(ConfigError, match="not divisible"):
        accumulation(OptimConfig(batch_size=10), 3)


def test_warmup_cosine_at_known_steps():
    lr = warmup_cosine(1.0, 0.1, epochs=10, steps_per_epoch=10, warmup_epochs=2)
    assert lr.shape == (100,)
    assert lr[0] == 0.0 and lr[10] == pytest.approx(0.5)  # linear warm-up over 20 steps
    assert lr[20] == pytest.approx(1.0)  # peak right after warm-up
    mid = 20 + 40  # half way through the cosine: (base + final) / 2
    assert lr[mid] == pytest.approx(0.55)
    s = 77
    expected = 0.1 + 0.45 * (1 + math.cos(math.pi * (s - 20) / 80))
    assert lr[s] == pytest.approx(expected)
    assert np.all(np.diff(lr[20:]) < 0) and lr[-1] > 0.1
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)


def test_lambda_schedule_paper_step_and_ramp() -> None:
    assert lambda_schedule(0.0) == 0.0
    assert lambda_schedule(199.99) == 0.0
    assert lambda_schedule(200.0) == 0.025
    assert lambda_schedule(799.0) == 0.025
    assert lambda_schedule(5.0, start_epoch=2, weight=0.1, ramp_epochs=6) == pytest.approx(0.05)
    assert lambda_schedule(9.0, start_epoch=2, weight=0.1, ramp_epochs=6) == 0.1
    # a ramp shorter than an epoch is still a ramp (fractional epochs: per-step values)
    assert lambda_schedule(2.25, start_epoch=2, weight=0.1, ramp_epochs=0.5) == pytest.approx(0.05)


def test_lambda_per_step():
    lam = per_step(lambda e: lambda_schedule(e, start_epoch=2, weight=0.025), 4, 5)
    assert lam.shape == (20,)
    assert np.all(lam[:10] == 0.0) and np.all(lam[10:] == 0.025)


def test_accumulation_layouts():
    from vicmae.engine.batching import largest_passing

    o = OptimConfig(batch_size=96)
    assert accumulation(o, 2) == (48, 1)  # no limit: one forward per device
    assert accumulation(o, 2, fits=20) == (16, 3)  # largest divisor of 48 within 20
    assert accumulation(OptimConfig(batch_size=18), 1, fits=9, multiple_of=2) == (6, 3)
    assert accumulation(OptimConfig(batch_size=96, accum=4), 2) == (12, 4)
    with pytest.raises(ConfigError, match="not divisible by the 5 processes"):
        accumulation(o, 5)
    with pytest.raises(ConfigError, match="disagree"):
        accumulation(OptimConfig(batch_size=96, accum=4, micro_batch=8), 2)
    # The GPU probe's search: the largest candidate that still fits, in few tries.
    tried = []
    cands = [2, 4, 6, 8, 12, 16, 24, 48]
    assert largest_passing(cands, lambda m: tried.append(m) or m <= 13) == 12
    assert len(tried) <= 4
    assert largest_passing(cands, lambda m: False) == 2
