"""The per-device batch: the paper recipe's 512 (section 4), refused where it cannot fit,
and a warning whenever the engine's own choice splits what the config asked for.

The refusal runs the real pretraining step of a tiny ViC-MAE; running out of memory is
``torch.OutOfMemoryError`` raised inside its forward, as CUDA raises it (the stand-in the
probe's tests use, ``tests/test_probe_lock_step.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from media import TINY_MODEL

from vicmae.config import ConfigError, load_config
from vicmae.distributed import DistInfo
from vicmae.engine.batching import accumulation, choose_micro_batch, probe_step, require_fits
from vicmae.engine.setup import Run
from vicmae.jobs.pretrain import PretrainLoss
from vicmae.model.vicmae import ViCMAE

CONFIGS = Path(__file__).resolve().parents[1] / "vicmae" / "configs"


def test_the_paper_recipe_takes_512_per_device_per_forward() -> None:
    for name in ("paper", "paper_large"):
        cfg = load_config(name)
        assert cfg.optim.micro_batch == 512 and cfg.optim.batch_size == 4096
        assert '"a batch size of 512 per device"' in (CONFIGS / f"{name}.yaml").read_text()
        # 8 devices: one forward of 512 each; fewer: forwards of 512 accumulated.
        assert accumulation(cfg.optim, 8) == (512, 1)
        assert accumulation(cfg.optim, 1) == (512, 8)
        with pytest.raises(ConfigError, match="256 per device, not a multiple of"):
            accumulation(cfg.optim, 16)  # it would have to split: refused, with the way out
    for name in ("authors", "authors_large"):  # their launch script: 128 per GPU
        assert load_config(name).optim.micro_batch == 128


def _tiny(batch: int = 16):
    torch.manual_seed(0)
    cfg = load_config(None, [*TINY_MODEL, "data.resolution=32", f"optim.batch_size={batch}"])
    run = Run("pretrain", cfg, DistInfo(), Path("unused"), None, None, "fp32")
    model = ViCMAE(cfg.model)
    probe = probe_step(run, model, PretrainLoss(cfg, np.zeros(1), run.device), 2, 32)
    return cfg, model, probe


def _out_of_memory_above(model: torch.nn.Module, samples: int) -> None:
    def hook(module, args) -> None:  # (2m, 1 + K, D): two views per sample
        if args[0].shape[0] > 2 * samples:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    model.encoder.blocks.register_forward_pre_hook(hook)


def test_a_set_micro_batch_that_does_not_fit_is_refused_in_one_line() -> None:
    _, model, probe = _tiny()
    _out_of_memory_above(model, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.raises(ConfigError) as err:
        require_fits(model, probe, 8, 16, DistInfo(), None)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("optim.micro_batch: 8 samples per device per forward do not fit")
    assert "set optim.micro_batch=4 or another divisor of 16" in message
    assert "contrastive negatives and BatchNorm statistics then cover fewer than 8" in message
    require_fits(model, probe, 4, 16, DistInfo(), None)  # fits: no error
    # Probing leaves no trace: weights, BatchNorm statistics, RNG states.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_micro_batch_of_one_that_does_not_fit_names_only_more_memory() -> None:
    _, model, probe = _tiny()
    _out_of_memory_above(model, 0)
    with pytest.raises(ConfigError, match="per forward do not fit in this GPU's memory; use GPUs"):
        require_fits(model, probe, 1, 16, DistInfo(), None, key="optim.accum")


def test_the_engine_warns_when_its_choice_splits_the_per_device_batch(caplog) -> None:
    cfg, model, probe = _tiny(batch=64)
    info = DistInfo()
    with caplog.at_level(logging.WARNING, logger="vicmae"):
        assert choose_micro_batch(cfg.optim, info, None, model, probe, 8) == (32, 2)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1
    assert lines[0].startswith("micro-batch 32 (at most 32 on a CPU) of the 64 per device")
    assert "covers 32 samples, not 64; set optim.micro_batch" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vicmae"):
        assert choose_micro_batch(cfg.optim, info, 16, model, probe, 8) == (16, 4)  # resumed
        assert "(the resumed run's) of the 64" in caplog.text
        caplog.clear()
        cfg16, *_ = _tiny(batch=16)  # one forward holds it all: nothing to say
        assert choose_micro_batch(cfg16.optim, info, None, model, probe, 8) == (16, 1)
        set_by_user = load_config(None, ["optim.batch_size=64", "optim.micro_batch=16"]).optim
        assert choose_micro_batch(set_by_user, info, None, model, probe, 8) == (16, 4)
    assert caplog.text == ""  # the user's own split is not warned about
