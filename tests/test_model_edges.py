"""The model's edges the mutation run found unguarded (scripts/mutate.py, group "model").

The decoder's unshuffle against MAE's rule written out here, masking at ratios whose share
of patches is not a whole number, the config's bounds and recipe defaults, the input
check, and the losses' options (norm_pix on a flat patch, the lambda ramp).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's convention)

from vicmae.engine.schedules import lambda_schedule
from vicmae.model.losses import reconstruction_loss
from vicmae.model.vicmae import ModelConfig, ViCMAE

TINY = dict(arch="vit_pico_patch8", img_size=32, decoder_dim=32, decoder_depth=1, decoder_heads=2)


def test_decoder_puts_tokens_back_in_patch_order_as_mae():
    """MAE's forward_decoder: visible tokens at their patches, the mask token elsewhere, the
    class token first, position embeddings added, then blocks, norm, prediction."""
    torch.manual_seed(0)
    model = ViCMAE(ModelConfig(**TINY)).eval()
    N, L, K = 3, 16, 5
    _, _, ids_restore = model.random_masking(torch.randn(N, L, 4), 1 - K / L)
    latent = torch.randn(N, 1 + K, model.encoder.embed_dim)  # (N, 1+K, D)
    with torch.no_grad():
        x = model.decoder_embed(latent)  # (N, 1+K, Dd)
        full = model.mask_token.expand(N, L, -1).clone()  # (N, L, Dd)
        ids_shuffle = torch.argsort(ids_restore, dim=1)  # kept token j sits at patch [n, j]
        for n in range(N):
            for j in range(K):
                full[n, ids_shuffle[n, j]] = x[n, 1 + j]
        seq = torch.cat([x[:, :1], full], dim=1) + model.decoder_pos_embed  # (N, 1+L, Dd)
        want = model.decoder_pred(model.decoder_norm(model.decoder_blocks(seq)))[:, 1:]
        got = model.forward_decoder(latent, ids_restore)
    assert got.shape == (N, L, 8 * 8 * 3)
    assert torch.allclose(got, want, atol=1e-6)
    assert model.decoder_norm.eps == 1e-6  # MAE's partial(nn.LayerNorm, eps=1e-6)


@pytest.mark.parametrize("ratio", [0.7, 0.3, 0.0])
def test_masking_keeps_the_floor_of_the_visible_share(ratio):
    torch.manual_seed(0)
    model = ViCMAE(ModelConfig(**TINY))
    kept, mask, _ = model.random_masking(torch.randn(2, 16, 4), ratio)
    keep = int(16 * (1 - ratio))  # MAE: len_keep = int(L * (1 - mask_ratio))
    assert kept.shape == (2, keep, 4) and (mask.sum(1) == 16 - keep).all()


def test_config_bounds():
    ModelConfig(**TINY, mask_ratio=0.0)  # no masking is allowed
    for bad in (1.0, 1.5, -0.5):
        with pytest.raises(ValueError, match="mask_ratio"):
            ModelConfig(**TINY, mask_ratio=bad)
    for bad in (0.0, -0.5):
        with pytest.raises(ValueError, match="temperature"):
            ModelConfig(**TINY, temperature=bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig(**TINY).mask_ratio = 0.9  # type: ignore[misc]


def test_model_defaults_are_the_recipes_sources():
    """The values vicmae/model/vicmae.py credits to the paper or the authors' code."""
    c = ModelConfig()
    assert (c.arch, c.img_size, c.mask_ratio) == ("vit_base_patch16", 224, 0.5)
    assert (c.decoder_dim, c.decoder_depth, c.decoder_heads) == (512, 8, 16)  # MAE's decoder
    assert (c.norm_pix_loss, c.pooling, c.gem_p, c.projector_dims) == (False, "mean", 3.0, ())
    assert (c.contrastive, c.temperature, c.drop_path) == ("ntxent", 0.1, 0.0)
    assert not c.reconstruct_both and c.gather_negatives


def test_forward_refuses_anything_but_view_pairs():
    model = ViCMAE(ModelConfig(**TINY))
    for shape in [(2, 3, 3, 32, 32), (2, 3, 32, 32), (2, 1, 3, 32, 32)]:
        with pytest.raises(ValueError, match="views must be"):
            model(torch.randn(*shape))


def test_reconstruction_loss_plain_and_norm_pix_on_a_flat_patch():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    target[0, 1] = 0.7  # a flat patch: variance 0
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    per_patch = ((pred - target) ** 2).mean(-1)
    plain = (per_patch * mask).sum() / mask.sum()
    assert torch.allclose(reconstruction_loss(pred, target, mask), plain)  # default: plain
    # MAE's norm_pix_loss: (target - mean) / sqrt(var + 1e-6), unbiased variance.
    t = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    want = ((F.mse_loss(pred, t, reduction="none").mean(-1)) * mask).sum() / mask.sum()
    got = reconstruction_loss(pred, target, mask, norm_pix=True)
    assert torch.isfinite(got) and torch.allclose(got, want)


def test_lambda_ramp():
    assert lambda_schedule(10.01, start_epoch=10, weight=0.5) == 0.5  # default: a step
    assert lambda_schedule(9.99, start_epoch=10, weight=0.5) == 0.0
    assert lambda_schedule(10.5, start_epoch=10, weight=0.5, ramp_epochs=1) == 0.25
    assert lambda_schedule(11.0, start_epoch=10, weight=0.5, ramp_epochs=4) == 0.125
    assert lambda_schedule(15.0, start_epoch=10, weight=0.5, ramp_epochs=4) == 0.5


def test_sincos_tables_shape_and_width_checks():
    from vicmae.model.pos_embed import sincos_1d, sincos_2d

    assert sincos_2d(8, 2).shape == (4, 8)  # no class-token row unless asked for
    assert sincos_2d(8, 2, cls_token=True).shape == (5, 8)
    with pytest.raises(ValueError, match="even"):
        sincos_1d(3, torch.arange(4.0))


def test_position_table_hook_leaves_other_tables_to_load_state_dict():
    """A missing table loads (strict=False); one of another width is torch's size error,
    not a resampling attempt."""
    model = ViCMAE(ModelConfig(**TINY))
    state = {k: v for k, v in model.state_dict().items() if k != "decoder_pos_embed"}
    model.load_state_dict(state, strict=False)
    state["decoder_pos_embed"] = torch.zeros(1, 1 + 6, 48)  # another width, 6 patches
    with pytest.raises(RuntimeError, match="size mismatch for decoder_pos_embed"):
        model.load_state_dict(state)
