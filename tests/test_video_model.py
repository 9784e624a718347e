"""The space-time ViT inflated from the frame encoder: still clips, shapes, gradients, state."""

from __future__ import annotations

import math

import pytest
import torch
from timm.optim import param_groups_layer_decay

from vicmae.jobs.finetune import Classifier
from vicmae.model.pos_embed import resample_pos_embed
from vicmae.model.video_vit import VideoViT, clips_from_loader, inflate
from vicmae.model.vit import ViTEncoder

ARCH, RES, PATCH = "vit_pico_patch8", 32, 8  # D 64, depth 2, 16 patches per frame


def _encoder(seed: int = 0, drop_path: float = 0.0) -> ViTEncoder:
    torch.manual_seed(seed)
    enc = ViTEncoder.from_arch(ARCH, RES, drop_path=drop_path).learn_pos_embed()
    with torch.no_grad():  # a class row and a bias that are not zero, as after fine-tuning
        enc.pos_embed.add_(0.1 * torch.randn_like(enc.pos_embed))
        enc.patch_embed.proj.bias.normal_(0.0, 0.1)
    return enc.eval()


def _frames(n: int = 2, res: int = RES, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, res, res, generator=torch.Generator().manual_seed(seed))


def _still(imgs: torch.Tensor, frames: int) -> torch.Tensor:
    """(N, 3, H, W) -> the clip (N, 3, T, H, W) of ``frames`` copies."""
    return imgs[:, :, None].expand(-1, -1, frames, -1, -1).contiguous()


def _frame_model_weighing_class_key(enc: ViTEncoder, imgs: torch.Tensor, bias: float):
    """The 2-D encoder on ``imgs`` with ``bias`` added to every query's attention logit for
    the class token's key; written out here from the blocks' own weights (pre-norm timm
    blocks, no layer scale), not through timm's forward."""
    x = enc.embed_patches(imgs)  # (N, L, D)
    cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)  # (N, 1+L, D)
    n, length, d = x.shape
    key_bias = torch.zeros(length)
    key_bias[0] = bias
    for blk in enc.blocks:
        heads = blk.attn.num_heads
        qkv = blk.attn.qkv(blk.norm1(x)).reshape(n, length, 3, heads, d // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (N, heads, 1+L, D/heads) each
        logits = q @ k.transpose(-2, -1) / math.sqrt(d // heads) + key_bias
        a = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, length, d)
        x = x + blk.attn.proj(a)
        x = x + blk.mlp(blk.norm2(x))
    return enc.norm(x)


@pytest.mark.parametrize("frames", [1, 2, 4])
def test_a_still_clip_one_tubelet_deep_gives_the_frame_models_features(frames):
    enc = _encoder()
    video = inflate(enc, num_frames=frames, tubelet=frames).eval()
    imgs = _frames()
    with torch.no_grad():
        got = video.forward_features(_still(imgs, frames))  # (N, 1+L, D)
        want = enc.forward_features(imgs)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("frames", "tubelet"), [(4, 2), (8, 2), (6, 3)])
def test_a_still_clip_equals_the_frame_model_with_the_class_key_weighed_by_one_over_t(
    frames, tubelet
):
    enc = _encoder()
    video = inflate(enc, num_frames=frames, tubelet=tubelet).eval()
    imgs = _frames()
    t_tokens = frames // tubelet
    with torch.no_grad():
        got = video.forward_features(_still(imgs, frames))  # (N, 1+T'*L, D)
        # The reference with no bias is the frame model itself.
        torch.testing.assert_close(
            _frame_model_weighing_class_key(enc, imgs, 0.0), enc.forward_features(imgs),
            atol=1e-5, rtol=1e-5,
        )  # fmt: skip
        want = _frame_model_weighing_class_key(enc, imgs, -math.log(t_tokens))  # (N, 1+L, D)
        plain = enc.forward_features(imgs)
    n, length, d = want.shape
    patches = got[:, 1:].reshape(n, t_tokens, length - 1, d)  # (N, T', L, D)
    torch.testing.assert_close(got[:, 0], want[:, 0], atol=1e-5, rtol=1e-5)
    for s in range(t_tokens):  # every time step holds the same tokens
        torch.testing.assert_close(patches[:, s], want[:, 1:], atol=1e-5, rtol=1e-5)
    # ... and the relation is not a tautology: the frame model without the weighing differs.
    assert (got[:, 0] - plain[:, 0]).abs().max() > 1e-3


def test_tokens_are_time_major_and_the_kernel_is_the_frames_kernel_over_t():
    enc = _encoder()
    video = inflate(enc, num_frames=6, tubelet=2).eval()
    imgs = _frames()
    clip = torch.zeros(2, 3, 6, RES, RES)
    clip[:, :, 2:4] = imgs[:, :, None]  # only time step 1 (frames 2 and 3) holds the image
    with torch.no_grad():
        tokens = video.patch_embed(clip).reshape(2, 3, (RES // PATCH) ** 2, 64)  # (N, T', L, D)
        frame = enc.patch_embed(imgs)  # (N, L, D)
    torch.testing.assert_close(tokens[:, 1], frame, atol=1e-5, rtol=1e-5)
    bias = enc.patch_embed.proj.bias.detach()
    for s in (0, 2):
        torch.testing.assert_close(tokens[:, s], bias.expand_as(frame))
    # Token s * L + i: time step s, patch i: spatial row i + temporal row s.
    with torch.no_grad():
        video.pos_embed_temporal.normal_()
        embedded = video.embed_patches(clip)  # (N, T'*L, D)
    length = (RES // PATCH) ** 2
    for s in range(3):
        for i in (0, 5, length - 1):
            want = tokens[:, s, i] + video.pos_embed[0, 1 + i] + video.pos_embed_temporal[0, s]
            torch.testing.assert_close(embedded[:, s * length + i], want.detach())


@pytest.mark.parametrize(
    ("frames", "tubelet", "res"), [(2, 2, 32), (4, 2, 32), (8, 2, 48), (6, 3, 24), (3, 1, 16)]
)
def test_shapes_for_several_clip_lengths_and_resolutions(frames, tubelet, res):
    enc = _encoder()
    video = inflate(enc, num_frames=frames, tubelet=tubelet, img_size=res).eval()
    grid = res // PATCH
    tokens = frames // tubelet * grid * grid
    clips = torch.randn(3, 3, frames, res, res)
    with torch.no_grad():
        assert video.forward_features(clips).shape == (3, 1 + tokens, 64)
        assert video(clips).shape == (3, 64)
    assert video.num_patches == tokens
    assert video.pos_embed.shape == (1, 1 + grid * grid, 64)
    assert video.pos_embed_temporal.shape == (1, frames // tubelet, 64)
    if res != RES:  # the pretrained table, resampled as a checkpoint is on load
        want = resample_pos_embed(enc.pos_embed.detach(), grid)
        torch.testing.assert_close(video.pos_embed.detach(), want)


def test_reuses_the_encoders_modules_and_starts_the_temporal_table_at_zero():
    enc = _encoder()
    video = inflate(enc, num_frames=4)
    assert video.blocks is enc.blocks and video.norm is enc.norm
    assert video.cls_token is enc.cls_token and video.pos_embed is enc.pos_embed
    assert video.tubelet == 2 and torch.equal(video.pos_embed_temporal, torch.zeros(1, 2, 64))
    fixed = ViTEncoder.from_arch(ARCH, RES)  # sin-cos buffer: stays a fixed buffer
    v2 = inflate(fixed, num_frames=4)
    assert "pos_embed" in dict(v2.named_buffers()) and v2.pos_embed is fixed.pos_embed
    assert video.no_weight_decay() == {"cls_token", "pos_embed", "pos_embed_temporal"}


def test_forward_backward_is_finite_and_every_parameter_learns():
    enc = _encoder(drop_path=0.1)
    video = inflate(enc, num_frames=4).train()
    clips = torch.randn(3, 3, 4, RES, RES)
    video(clips).pow(2).mean().backward()
    for name, p in video.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert video.pos_embed_temporal.grad.abs().sum() > 0
    # The gradient lands in the encoder's own parameters: they are the same tensors.
    assert enc.blocks[0].attn.qkv.weight.grad is video.blocks[0].attn.qkv.weight.grad
    assert enc.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_state_dict_round_trip():
    video = inflate(_encoder(seed=0), num_frames=4).eval()
    with torch.no_grad():
        video.pos_embed_temporal.normal_()
        video.patch_embed.proj.weight.mul_(1.5)
    state = video.state_dict()
    assert {k for k in state if not k.startswith("blocks.")} == {
        "cls_token", "pos_embed", "pos_embed_temporal", "patch_embed.proj.weight",
        "patch_embed.proj.bias", "norm.weight", "norm.bias",
    }  # fmt: skip
    other = inflate(_encoder(seed=1), num_frames=4).eval()
    clips = torch.randn(2, 3, 4, RES, RES)
    with torch.no_grad():
        assert not torch.allclose(other(clips), video(clips))
        other.load_state_dict(state)
        assert torch.equal(other(clips), video(clips))
    # Saved at 32, loaded at 48: the spatial table is resampled as the 2-D encoder's is.
    larger = inflate(_encoder(seed=1), num_frames=4, img_size=48)
    larger.load_state_dict(state)
    want = resample_pos_embed(state["pos_embed"], 48 // PATCH)
    torch.testing.assert_close(larger.pos_embed.detach(), want)


def test_the_loader_layout_is_permuted_in_one_place_and_refused_unpermuted():
    video = inflate(_encoder(), num_frames=4).eval()
    loader_clips = torch.randn(2, 4, 3, RES, RES)  # (N, T, 3, H, W) as Batch.views holds a clip
    x = clips_from_loader(loader_clips)
    assert x.shape == (2, 3, 4, RES, RES)
    for t in range(4):
        assert torch.equal(x[:, :, t], loader_clips[:, t])
    with pytest.raises(ValueError, match="clips_from_loader"):
        video(loader_clips)
    with pytest.raises(ValueError, match="expected clips"):
        video(torch.randn(2, 3, 6, RES, RES))  # not the model's clip length
    with pytest.raises(ValueError, match="multiple of tubelet"):
        VideoViT(_encoder(), num_frames=5, tubelet=2)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_the_fine_tune_classifier_takes_it_as_its_encoder(pool):
    video = inflate(_encoder(), num_frames=4)
    model = Classifier(video, num_classes=5, pool=pool)
    logits = model(torch.randn(2, 3, 4, RES, RES))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    # Layer-wise lr decay (timm, MAE's rule): the temporal table sits with the embeddings.
    groups = param_groups_layer_decay(model, 0.05, (), layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    stem = scale[id(video.patch_embed.proj.weight)]
    assert scale[id(video.pos_embed_temporal)] == stem == 0.5**3  # depth 2: layers 0..3
    assert scale[id(model.head.weight)] == 1.0
