"""ViC-MAE model on a tiny ViT: shapes, masking, losses, init, pooling, sizes against timm."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import timm
import torch
from torch import nn

from vicmae.engine.param_groups import param_groups
from vicmae.model.losses import contrastive_loss
from vicmae.model.pos_embed import sincos_2d
from vicmae.model.vicmae import ModelConfig, ViCMAE, patchify
from vicmae.model.vit import ViTArch, ViTEncoder, vit_arch

TINY = dict(arch="vit_pico_patch8", img_size=32, decoder_dim=32, decoder_depth=1, decoder_heads=2)

CONFIGS = {
    "mean": ModelConfig(**TINY),
    "max-normpix": ModelConfig(**TINY, pooling="max", norm_pix_loss=True),
    "gem": ModelConfig(**TINY, pooling="gem", projector_dims=(96, 96, 16)),
    "mean-normpix-both": ModelConfig(**TINY, norm_pix_loss=True, reconstruct_both=True),
    "cross-view": ModelConfig(**TINY, contrastive="cross_view"),
}


def _views(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 3, 32, 32, generator=g)  # (N, 2, 3, H, W)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_shapes_and_finite_backward(name: str) -> None:
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    model = ViCMAE(cfg)
    out = model(_views())
    N, L, D, p = 4, 16, 64, 8
    assert out.pred.shape == (N, L, p * p * 3)
    assert out.mask.shape == (N, L)
    assert out.pooled.shape == (N, 2, D)
    assert out.mask_views.shape == (N, 2, L)
    assert out.loss_recon.ndim == 0 and out.loss_contrastive.ndim == 0
    assert torch.isfinite(out.loss_recon) and torch.isfinite(out.loss_contrastive)
    (out.loss_recon + 0.5 * out.loss_contrastive).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient"
    assert any(param.grad.abs().sum() > 0 for param in model.encoder.parameters())


def test_masking_exact_count_and_own_mask_per_view() -> None:
    torch.manual_seed(0)
    model = ViCMAE(CONFIGS["mean"])
    views = _views(8)
    for ratio in (0.75, 0.5):
        out = model(views, mask_ratio=ratio)
        n_keep = int(16 * (1 - ratio))
        assert (out.mask_views.sum(-1) == 16 - n_keep).all()
        assert set(out.mask_views.unique().tolist()) == {0.0, 1.0}
        # each view of each sample draws its own mask
        assert (out.mask_views[:, 0] != out.mask_views[:, 1]).any(-1).all()
        assert torch.equal(out.mask, out.mask_views[:, 0])


def test_random_masking_keeps_the_unmasked_tokens_in_order() -> None:
    torch.manual_seed(1)
    model = ViCMAE(CONFIGS["mean"])
    x = torch.randn(3, 16, 5)  # (N, L, D)
    kept, mask, ids_restore = model.random_masking(x, 0.75)
    assert kept.shape == (3, 4, 5)
    for i in range(3):
        visible = x[i][mask[i] == 0]  # (4, 5), patch order
        # kept rows are the visible patches, in the shuffled order ids_restore undoes
        assert torch.equal(torch.sort(kept[i].sum(-1)).values, torch.sort(visible.sum(-1)).values)
    assert torch.equal(torch.sort(ids_restore, dim=1).values, torch.arange(16).expand(3, 16))


def test_loss_decreases_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = ViCMAE(CONFIGS["mean"])
    views = _views(4, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    recon, contrastive = [], []
    for _ in range(20):
        torch.manual_seed(123)  # same masks every step: the decrease is not mask luck
        out = model(views)
        loss = out.loss_recon + out.loss_contrastive
        opt.zero_grad()
        loss.backward()
        opt.step()
        recon.append(out.loss_recon.item())
        contrastive.append(out.loss_contrastive.item())
    assert np.isfinite(recon).all() and np.isfinite(contrastive).all()
    assert recon[-1] < 0.9 * recon[0], recon  # ~0.78x in practice
    assert contrastive[-1] < 0.5 * contrastive[0], contrastive  # ~0.001x


def test_reconstruction_loss_counts_masked_patches_only() -> None:
    torch.manual_seed(0)
    model = ViCMAE(CONFIGS["mean"])
    imgs = torch.randn(2, 3, 32, 32)
    target = model.patchify(imgs)  # (2, 16, 192)
    mask = torch.zeros(2, 16)
    mask[:, :5] = 1
    pred = target.clone()
    pred[mask == 0] += 100.0  # wrong only where visible
    assert model.forward_loss(imgs, pred, mask).item() == 0.0
    pred[0, 0] += 1.0  # wrong on one masked patch by 1 per pixel
    assert model.forward_loss(imgs, pred, mask).item() == pytest.approx(1.0 / 10)


def test_patchify_matches_mae_layout() -> None:
    imgs = torch.randn(2, 3, 32, 32)
    x = patchify(imgs, 8)  # (2, 16, 192)
    # patch (row 1, col 2) holds pixels imgs[:, :, 8:16, 16:24] as (p, p, 3)
    ref = imgs[:, :, 8:16, 16:24].permute(0, 2, 3, 1).reshape(2, -1)
    assert torch.equal(x[:, 1 * 4 + 2], ref)
    # Every pixel lands in exactly one patch: MAE's unpatchify, written out, inverts it.
    back = torch.einsum("nhwpqc->nchpwq", x.reshape(2, 4, 4, 8, 8, 3)).reshape(2, 3, 32, 32)
    assert torch.equal(back, imgs)


def _mae_sincos_numpy(embed_dim: int, grid_size: int) -> np.ndarray:
    """MAE's util/pos_embed.py, written out independently as the reference."""

    def one_d(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gh = np.arange(grid_size, dtype=np.float32)
    gw = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], 1)
    return np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)


@pytest.mark.parametrize(("dim", "grid"), [(64, 4), (768, 14)])
def test_sincos_pos_embed_matches_mae(dim: int, grid: int) -> None:
    ours = sincos_2d(dim, grid, cls_token=True).numpy()
    np.testing.assert_allclose(ours, _mae_sincos_numpy(dim, grid), atol=1e-6)


def test_pos_embed_is_fixed_and_init_is_maes() -> None:
    torch.manual_seed(0)
    model = ViCMAE(CONFIGS["mean"])
    names = {n for n, _ in model.named_parameters()}
    assert "encoder.pos_embed" not in names and "decoder_pos_embed" not in names
    assert "encoder.pos_embed" in model.state_dict()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            bound = (6 / (mod.in_features + mod.out_features)) ** 0.5  # xavier_uniform
            assert mod.weight.abs().max() <= bound, name
            assert (mod.bias == 0).all(), name
    w = model.encoder.patch_embed.proj.weight
    assert w.abs().max() <= (6 / (w.shape[0] + w[0].numel())) ** 0.5
    for tok in (model.encoder.cls_token, model.mask_token):
        assert 0.005 < tok.std().item() < 0.05


def test_pooling_reduces_visible_tokens_without_cls() -> None:
    tokens = torch.randn(3, 5, 7)  # (N, K, D)
    m = {k: ViCMAE(CONFIGS[k]) for k in ("mean", "max-normpix", "gem")}
    torch.testing.assert_close(m["mean"].pool(tokens), tokens.mean(1))
    torch.testing.assert_close(m["max-normpix"].pool(tokens), tokens.max(1).values)
    gem = tokens.clamp(min=1e-6).pow(3.0).mean(1).pow(1 / 3.0)
    torch.testing.assert_close(m["gem"].pool(tokens), gem)
    # pooled output of forward = pool over the encoder's visible outputs, cls excluded
    model = m["mean"]
    torch.manual_seed(5)
    out = model(_views(2))
    torch.manual_seed(5)
    imgs = _views(2).transpose(0, 1).reshape(4, 3, 32, 32)
    latent, _, _ = model.forward_encoder(imgs, model.cfg.mask_ratio)
    torch.testing.assert_close(out.pooled.transpose(0, 1).reshape(4, -1), latent[:, 1:].mean(1))


@pytest.mark.parametrize("norm_pix", [False, True])
@pytest.mark.parametrize("both", [False, True])
def test_reconstruction_of_one_or_both_views_and_norm_pix_targets(
    both: bool, norm_pix: bool
) -> None:
    """One view (Algorithm 1) or both averaged (authors' code), pixel or normalised targets."""
    cfg = ModelConfig(**TINY, reconstruct_both=both, norm_pix_loss=norm_pix)
    torch.manual_seed(0)
    model = ViCMAE(cfg).eval()  # eval: no BatchNorm update between the two passes
    views = _views(4, seed=7)
    with torch.no_grad():
        torch.manual_seed(11)
        out = model(views)
        # The same noise draws, replayed: one encoder call over the 2N view-major rows.
        torch.manual_seed(11)
        imgs = views.transpose(0, 1).reshape(8, 3, 32, 32)
        latent, mask, ids_restore = model.forward_encoder(imgs, cfg.mask_ratio)
        pred = model.forward_decoder(latent, ids_restore)
        target = patchify(imgs, 8)
        if norm_pix:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(-1)  # (2N, L)
        view_loss = [
            (per_patch[v] * mask[v]).sum() / mask[v].sum() for v in (slice(0, 4), slice(4, 8))
        ]
    expected = 0.5 * (view_loss[0] + view_loss[1]) if both else view_loss[0]
    torch.testing.assert_close(out.loss_recon, expected)
    assert not torch.allclose(view_loss[0], view_loss[1])  # the two choices differ
    if norm_pix:  # normalised targets are not the pixels: the flag changes the loss
        plain = ((pred - patchify(imgs, 8)) ** 2).mean(-1)[:4]
        assert not torch.allclose((plain * mask[:4]).sum() / mask[:4].sum(), view_loss[0])


def test_contrastive_form_is_a_config_choice() -> None:
    torch.manual_seed(0)
    ntx = ViCMAE(CONFIGS["mean"]).eval()
    cross = ViCMAE(CONFIGS["cross-view"]).eval()
    cross.load_state_dict(ntx.state_dict())
    views = _views(8, seed=2)
    with torch.no_grad():
        torch.manual_seed(1)
        a = ntx(views)
        torch.manual_seed(1)
        b = cross(views)
    torch.testing.assert_close(a.loss_recon, b.loss_recon)
    p, z = ntx.projector(a.pooled[:, 0]), ntx.projector(a.pooled[:, 1])
    torch.testing.assert_close(a.loss_contrastive, contrastive_loss("ntxent", p, z, 0.1))
    torch.testing.assert_close(b.loss_contrastive, contrastive_loss("cross_view", p, z, 0.1))
    with pytest.raises(ValueError, match="contrastive"):
        ModelConfig(**TINY, contrastive="byol")


def test_projector_layout_paper_default_and_custom() -> None:
    model = ViCMAE(CONFIGS["mean"])
    kinds = [type(m).__name__ for m in model.projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    widths = [(m.in_features, m.out_features) for m in model.projector if isinstance(m, nn.Linear)]
    assert widths == [(64, 128), (128, 128), (128, 128)]  # up to 2x width, then kept
    custom = ViCMAE(CONFIGS["gem"]).projector
    assert [m.out_features for m in custom if isinstance(m, nn.Linear)] == [96, 96, 16]
    # The authors' projector (models_vicmae.py), at 4096-4096-128 on a ViT-B's width.
    with torch.device("meta"):
        authors = ViCMAE(ModelConfig(projector_dims=(4096, 4096, 128))).projector
    layout = [
        (type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None))
        for m in authors
    ]
    assert layout == [
        ("Linear", 768, 4096), ("BatchNorm1d", None, None), ("ReLU", None, None),
        ("Linear", 4096, 4096), ("BatchNorm1d", None, None), ("ReLU", None, None),
        ("Linear", 4096, 128),
    ]  # fmt: skip
    assert authors[-1].bias is not None and authors[1].num_features == 4096


def test_config_validation_and_from_dict() -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        ModelConfig(arch="vit_giant")
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(**TINY, pooling="attn")
    with pytest.raises(ValueError, match="multiple"):
        ModelConfig(**{**TINY, "img_size": 30})
    cfg = ModelConfig.from_dict({**TINY, "projector_dims": [8, 4]})
    assert cfg.projector_dims == (8, 4)
    assert ModelConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"arch": "vit_base_patch16", "bogus": 1})


@pytest.mark.parametrize(
    ("arch", "timm_name"),
    [
        ("vit_small_patch16", "vit_small_patch16_224"),
        ("vit_base_patch16", "vit_base_patch16_224"),
        ("vit_large_patch16", "vit_large_patch16_224"),
        ("vit_huge_patch14", "vit_huge_patch14_224"),
    ],
)
def test_encoder_sizes_match_timm(arch: str, timm_name: str) -> None:
    with torch.device("meta"):  # no memory, no init cost
        ours = ViTEncoder.from_arch(arch)
        theirs = timm.create_model(timm_name, num_classes=0)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    theirs_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert ours_shapes == theirs_shapes
    n_ours = sum(v.numel() for v in ours.parameters()) + ours.pos_embed.numel()
    assert n_ours == sum(v.numel() for v in theirs.parameters())
    spec = vit_arch(arch)
    assert isinstance(spec, ViTArch)
    assert (spec.embed_dim, spec.depth, spec.patch_size) == (
        theirs.embed_dim,
        len(theirs.blocks),
        theirs.patch_embed.patch_size[0],
    )
    assert spec.num_heads == theirs.blocks[0].attn.num_heads


def test_param_groups_follow_the_authors_rule() -> None:
    """timm's param_groups_weight_decay with no exemption list (the authors' pretrain.py):
    1-D tensors and biases are exempt; the 3-D class and mask tokens are decayed."""
    from timm.optim import param_groups_weight_decay

    model = ViCMAE(CONFIGS["mean"])
    groups = param_groups(model, weight_decay=0.05)
    by_decay = {g["weight_decay"]: set(g["param_names"]) for g in groups}
    decay, no_decay = by_decay[0.05], by_decay[0.0]
    assert {"encoder.norm.weight", "encoder.blocks.0.norm1.bias", "decoder_pred.bias"} <= no_decay
    assert {"encoder.cls_token", "mask_token", "encoder.blocks.0.attn.qkv.weight"} <= decay
    assert all(not n.endswith(".bias") for n in decay)
    n_all = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_all
    # The same split as timm's own function, parameter for parameter.
    theirs = {g["weight_decay"]: {id(p) for p in g["params"]} for g in
              param_groups_weight_decay(model, 0.05)}  # fmt: skip
    ours = {g["weight_decay"]: {id(p) for p in g["params"]} for g in groups}
    assert ours == theirs
    torch.optim.AdamW(groups, lr=1e-3)  # the groups are valid optimizer input


def _bicubic_reference(table: torch.Tensor, grid: int, antialias: bool) -> torch.Tensor:
    """The grid resampled bicubically, cls row kept: timm's loading with ``antialias=True``,
    MAE's / the authors' ``interpolate_pos_embed`` with False."""
    old = int((table.shape[1] - 1) ** 0.5)
    cells = table[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)  # (1, D, G, G)
    cells = torch.nn.functional.interpolate(
        cells, size=(grid, grid), mode="bicubic", align_corners=False, antialias=antialias
    )
    return torch.cat([table[:, :1], cells.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def test_load_at_another_resolution_resamples_the_pretrained_positions() -> None:
    """Fine-tuning/probing at another size: the checkpoint's tables resampled, weights load."""
    torch.manual_seed(0)
    src = ViCMAE(CONFIGS["mean"])
    big = ViCMAE(dataclasses.replace(CONFIGS["mean"], img_size=48))
    big.load_state_dict(src.state_dict())
    assert big.encoder.pos_embed.shape == (1, 1 + 36, 64)
    assert big.decoder_pos_embed.shape == (1, 1 + 36, 32)
    # Bicubic as timm loads a checkpoint (antialiased), cls row kept ...
    ref = _bicubic_reference(src.encoder.pos_embed, 6, antialias=True)
    torch.testing.assert_close(big.encoder.pos_embed, ref)
    ref = _bicubic_reference(src.decoder_pos_embed, 6, antialias=True)
    torch.testing.assert_close(big.decoder_pos_embed, ref)
    # ... not torch's plain bicubic (MAE, the authors: another cubic kernel, a = -0.75) ...
    plain = _bicubic_reference(src.encoder.pos_embed, 6, antialias=False)
    assert not torch.allclose(big.encoder.pos_embed, plain, atol=1e-3)
    # ... and not the exact sin-cos table of the new grid (what a fresh model holds).
    assert not torch.allclose(big.encoder.pos_embed[0], sincos_2d(64, 6, cls_token=True))
    torch.testing.assert_close(
        big.encoder.blocks[0].attn.qkv.weight, src.encoder.blocks[0].attn.qkv.weight
    )
    assert big.encoder.forward_features(torch.randn(2, 3, 48, 48)).shape == (2, 37, 64)
    with pytest.raises(RuntimeError):  # a learned weight of the wrong shape still fails
        sd = src.state_dict()
        sd["encoder.norm.weight"] = torch.zeros(3)
        big.load_state_dict(sd)


def test_learn_pos_embed_makes_a_parameter_for_fine_tuning() -> None:
    torch.manual_seed(0)
    src = ViCMAE(CONFIGS["mean"])
    enc = ViTEncoder.from_arch("vit_pico_patch8", img_size=48)
    enc.load_state_dict({k[8:]: v for k, v in src.state_dict().items() if k.startswith("encoder.")})
    before = enc.pos_embed.clone()
    assert "pos_embed" not in dict(enc.named_parameters())
    assert enc.learn_pos_embed() is enc and enc.learn_pos_embed() is enc  # idempotent
    params = dict(enc.named_parameters())
    assert "pos_embed" in params and params["pos_embed"].requires_grad
    torch.testing.assert_close(enc.pos_embed.detach(), before)
    enc(torch.randn(2, 3, 48, 48)).sum().backward()
    assert enc.pos_embed.grad is not None and enc.pos_embed.grad.abs().sum() > 0
    # same state-dict key, so checkpoints load either way; no weight decay on it
    assert list(enc.state_dict()).count("pos_embed") == 1
    (group,) = [g for g in param_groups(enc, 0.05) if "pos_embed" in g["param_names"]]
    assert group["weight_decay"] == 0.0
