"""ViT encoder built from timm's blocks, with fixed sin-cos position embeddings.

Parameter names follow timm's ``VisionTransformer`` (``cls_token``, ``pos_embed``,
``patch_embed.proj.*``, ``blocks.N.*``, ``norm.*``) so that export to timm is a key
filter, not a conversion. Attention is timm's ``Attention``, which calls
``F.scaled_dot_product_attention`` (SDPA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.layers import LayerNorm, PatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from vicmae.model.pos_embed import resample_pos_embed_hook, sincos_2d


@dataclass(frozen=True)
class ViTArch:
    """A ViT size: token width, blocks, attention heads, patch side (MLP ratio 4, as timm)."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int


# Names as timm's (without the ``_224`` resolution suffix), sizes as timm and the authors'
# ``models_vicmae.py`` define them.
VIT_ARCHS: dict[str, ViTArch] = {
    # Test/demo size only: runs in milliseconds on a CPU at 32x32.
    "vit_pico_patch8": ViTArch(embed_dim=64, depth=2, num_heads=2, patch_size=8),
    "vit_tiny_patch16": ViTArch(embed_dim=192, depth=12, num_heads=3, patch_size=16),
    "vit_small_patch16": ViTArch(embed_dim=384, depth=12, num_heads=6, patch_size=16),
    "vit_base_patch16": ViTArch(embed_dim=768, depth=12, num_heads=12, patch_size=16),
    "vit_large_patch16": ViTArch(embed_dim=1024, depth=24, num_heads=16, patch_size=16),
    "vit_huge_patch14": ViTArch(embed_dim=1280, depth=32, num_heads=16, patch_size=14),
}


def vit_arch(name: str) -> ViTArch:
    """The ``ViTArch`` of an architecture name; ValueError naming the choices otherwise.

    Example: ``vit_arch("vit_base_patch16").embed_dim == 768``.
    """
    try:
        return VIT_ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown arch {name!r}; choose one of {sorted(VIT_ARCHS)}") from None


def init_weights(module: nn.Module) -> None:
    """MAE's init: xavier_uniform for Linear (bias 0), LayerNorm weight 1 / bias 0.

    Apply with ``model.apply(init_weights)``.
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def make_blocks(dim: int, depth: int, num_heads: int, drop_path: float = 0.0) -> nn.Sequential:
    """``depth`` pre-norm transformer blocks (timm), drop path rising linearly to ``drop_path``."""
    rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
    return nn.Sequential(
        *[
            Block(
                dim,
                num_heads,
                mlp_ratio=4.0,
                qkv_bias=True,
                norm_layer=LayerNorm,  # timm's, eps 1e-6: same numerics as timm's ViT
                drop_path=rates[i],
            )
            for i in range(depth)
        ]
    )


class ViTEncoder(nn.Module):
    """ViT encoder: patch embedding, cls token, sin-cos positions, blocks, final norm.

    ``forward_features`` runs the whole image (evaluation); ``forward_tokens`` runs a
    (masked) subset of patch tokens produced by ``embed_patches`` (pretraining).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2

        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Fixed sin-cos (paper appendix A; authors' code: requires_grad=False): a buffer,
        # saved in the state dict so that the export carries it to timm (whose pos_embed
        # is a parameter). ``learn_pos_embed`` makes it learned for fine-tuning.
        self.register_buffer(
            "pos_embed", sincos_2d(embed_dim, self.grid_size, cls_token=True)[None]
        )  # (1, 1+L, D)
        self.blocks = make_blocks(embed_dim, depth, num_heads, drop_path)
        self.norm = LayerNorm(embed_dim)
        self.initialize_weights()
        self.register_load_state_dict_pre_hook(resample_pos_embed_hook("pos_embed"))

    def initialize_weights(self) -> None:
        """MAE's init: patch embedding as a Linear on its flattened weight, tokens N(0, 0.02)."""
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(init_weights)

    @classmethod
    def from_arch(cls, arch: str, img_size: int = 224, drop_path: float = 0.0) -> ViTEncoder:
        """Build by name, e.g. ``ViTEncoder.from_arch("vit_base_patch16")``."""
        a = vit_arch(arch)
        return cls(img_size, a.patch_size, a.embed_dim, a.depth, a.num_heads, drop_path)

    def learn_pos_embed(self) -> ViTEncoder:
        """Make ``pos_embed`` a learned Parameter holding its current values; returns self.

        For fine-tuning, as the authors' (and MAE's) fine-tuning does: timm's ViT learns its
        position table, started from the pretrained sin-cos one. Call it after loading the
        checkpoint (the table is resampled to this encoder's grid on load) and before
        building the optimiser. The state-dict key stays ``pos_embed``.
        """
        if not isinstance(self.pos_embed, nn.Parameter):
            table = self.pos_embed.detach().clone()
            del self._buffers["pos_embed"]
            self.pos_embed = nn.Parameter(table)
        return self

    def no_weight_decay(self) -> set[str]:
        """Names exempt from weight decay when this encoder is trained alone (fine-tuning),
        timm's ``VisionTransformer.no_weight_decay`` (``dist_token`` aside; we have none)."""
        return {"pos_embed", "cls_token"}

    def embed_patches(self, imgs: Tensor) -> Tensor:
        """imgs: (N, 3, H, W) -> patch tokens with positions added: (N, L, D)."""
        x = self.patch_embed(imgs)  # (N, L, D)
        return x + self.pos_embed[:, 1:, :]

    def forward_tokens(self, x: Tensor) -> Tensor:
        """x: (N, K, D) patch tokens (any subset, positions added) -> (N, 1+K, D) normed."""
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)  # (N, 1, D)
        x = torch.cat([cls, x], dim=1)  # (N, 1+K, D)
        x = self.blocks(x)
        return self.norm(x)

    def forward_features(self, imgs: Tensor) -> Tensor:
        """imgs: (N, 3, H, W) -> all tokens, no masking: (N, 1+L, D); same as timm's."""
        return self.forward_tokens(self.embed_patches(imgs))

    def forward(self, imgs: Tensor) -> Tensor:
        """imgs: (N, 3, H, W) -> cls feature (N, D)."""
        return self.forward_features(imgs)[:, 0]
