"""load_encoder: the evaluations' encoder is built alone and takes only the encoder's weights."""

from __future__ import annotations

import pytest
import torch
from media import TINY_MODEL

from vicmae.config import ConfigError, EvalModelConfig, load_config, to_dict
from vicmae.engine.checkpoint import save_checkpoint
from vicmae.engine.evaluation import load_encoder
from vicmae.model.vicmae import ViCMAE
from vicmae.model.vit import ViTEncoder

TINY = [*TINY_MODEL, "data.resolution=32"]


def _checkpoint(path, keep=lambda key: True):
    torch.manual_seed(0)
    cfg = load_config(None, TINY)
    model = ViCMAE(cfg.model)
    weights = {k: v for k, v in model.state_dict().items() if keep(k)}
    state = {"kind": "pretrain", "model": weights, "config": to_dict(cfg), "step": 0}
    return save_checkpoint(path, state), model


def test_only_the_encoder_is_built_and_loaded(tmp_path):
    # The decoder and projector left out of the file: only the encoder's weights are read.
    ckpt, source = _checkpoint(tmp_path / "last.pt", lambda k: k.startswith("encoder."))
    encoder, res, arch = load_encoder(EvalModelConfig(checkpoint=str(ckpt)), None)
    assert type(encoder) is ViTEncoder and (res, arch) == (32, "vit_pico_patch8")
    mine, theirs = encoder.state_dict(), source.encoder.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    imgs = torch.randn(2, 3, 32, 32)
    source.eval(), encoder.eval()
    with torch.no_grad():
        assert torch.equal(encoder.forward_features(imgs), source.encoder.forward_features(imgs))


def test_another_resolution_and_random_init(tmp_path):
    ckpt, source = _checkpoint(tmp_path / "last.pt")
    encoder, res, _ = load_encoder(EvalModelConfig(checkpoint=str(ckpt)), 48, drop_path=0.1)
    assert res == 48 and encoder.grid_size == 6 and encoder.pos_embed.shape == (1, 37, 64)
    assert torch.equal(encoder.cls_token, source.encoder.cls_token)
    random, _, _ = load_encoder(EvalModelConfig(checkpoint=str(ckpt), random_init=True), None)
    assert not torch.equal(random.cls_token, source.encoder.cls_token)


def test_a_checkpoint_without_the_encoder_is_refused_in_one_line(tmp_path):
    ckpt, _ = _checkpoint(tmp_path / "last.pt", lambda k: not k.startswith("encoder.blocks.1."))
    with pytest.raises(ConfigError, match="weights do not fit its config"):
        load_encoder(EvalModelConfig(checkpoint=str(ckpt)), None)
