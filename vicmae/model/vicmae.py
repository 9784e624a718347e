"""ViC-MAE: a masked autoencoder whose pooled visible-token features are also contrasted.

Reads like MAE's ``models_mae.py``: ``patchify``, ``random_masking``, ``forward_encoder``,
``forward_decoder``, ``forward_loss``, then the ViC-MAE additions ``pool``, ``projector``
and the contrastive loss (paper section 3.2, Algorithm 1, appendix A).

Two views of one video (two frames) or of one image (two augmentations) go through the
same encoder (shared weights: the siamese case with negatives), each with its own random
mask. View 0 is reconstructed (Algorithm 1 reconstructs f_i only), or both views with
their losses averaged (the authors' code); the visible-token outputs of both views are
pooled, projected and contrasted (``vicmae.model.losses`` has the forms and their sources).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vicmae.model.losses import (
    CONTRASTIVE_FORMS,
    ContrastiveForm,
    contrastive_loss,
    reconstruction_loss,
)
from vicmae.model.pos_embed import resample_pos_embed_hook, sincos_2d
from vicmae.model.vit import ViTEncoder, init_weights, make_blocks, vit_arch

__all__ = ["ModelConfig", "ViCMAE", "ViCMAEOutput", "patchify"]

POOLINGS = ("mean", "max", "gem")


@dataclass(frozen=True)
class ModelConfig:
    """Model hyper-parameters. Defaults are the ``paper`` recipe for ViT-B/16.

    Each value names its source: the paper (table, section, Algorithm 1, appendix A) or,
    where the paper is silent, the authors' released code (GitHub jeffhernandez1995/ViC-MAE,
    ``models_vicmae.py``, ``pretrain.py``, ``scripts/pretrain_in1k_k400.sh``). The
    ``authors`` recipe (``vicmae/configs/authors.yaml``) sets their code's values throughout.
    """

    # Paper section 4 and Tables 5-7: ViT-B/16 and ViT-L/16.
    arch: str = "vit_base_patch16"
    img_size: int = 224  # paper section 4: frames resized to 224; authors: --input_size 224
    # Paper: no ratio stated (appendix A only "followed [MAE, ST-MAE]"); authors' code
    # (pretrain.py default and launch script): 0.5.
    mask_ratio: float = 0.5
    # Paper section 4: "a small decoder as proposed by He et al." (MAE: 512 wide, 8 blocks);
    # authors' code: vicmae_vit_{base,large}_patch16_dec512d8b, 16 heads.
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    # Paper Algorithm 1 and eq. 2: target = patchify(f_i), plain pixels. Authors' code:
    # True (--norm_pix_loss defaults on; their released checkpoints used it).
    norm_pix_loss: bool = False
    # Paper Table 4 and section 5: mean is best (max and GeM are the ablations); authors'
    # code: torch.mean over the visible tokens, cls excluded.
    pooling: str = "mean"
    gem_p: float = 3.0  # GeM's exponent (Radenovic et al.); only read with pooling="gem"
    # Widths of the projector's Linear layers; Linear -> BatchNorm1d -> ReLU for each but
    # the last, which is a plain Linear (with bias). () = the paper's (appendix A,
    # following VICReg's expander; section 3.2): 2x the encoder width three times, so
    # (1536, 1536, 1536) for ViT-B. Authors' code: (4096, 4096, 128).
    projector_dims: tuple[int, ...] = ()
    # Paper eq. 3 and section 3.1 ("the other 2(N - 1) examples are treated as negative
    # examples"): NT-Xent over 2N rows, same-view negatives included. "cross_view" is
    # Algorithm 1's N x N form; "ntxent_local_ids" the authors' code exactly (see losses.py).
    contrastive: ContrastiveForm = "ntxent"
    # Paper: no value (eq. 3 names tau); authors' code: 0.1.
    temperature: float = 0.1
    # Paper appendix A: "We do not perform ... path dropping"; authors' code: none.
    drop_path: float = 0.0
    # Paper Algorithm 1 and section 3.2 reconstruct view i only. Authors' code: both views,
    # 0.5 x (loss_1 + loss_2).
    reconstruct_both: bool = False
    # Paper: silent. Authors' code: negatives from every GPU (all-gather with gradients).
    gather_negatives: bool = True

    def __post_init__(self) -> None:
        patch = vit_arch(self.arch).patch_size  # raises on an unknown name
        if self.img_size % patch:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch {patch}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.contrastive not in CONTRASTIVE_FORMS:
            raise ValueError(
                f"contrastive must be one of {CONTRASTIVE_FORMS}, got {self.contrastive!r}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        # YAML gives lists; keep the dataclass hashable and immutable.
        object.__setattr__(self, "projector_dims", tuple(int(d) for d in self.projector_dims))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict (a checkpoint's ``config["model"]``); unknown keys raise."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**d)


class ViCMAEOutput(NamedTuple):
    """What ``ViCMAE.forward`` returns (a NamedTuple: DDP and torch.compile handle it)."""

    loss_recon: Tensor  # () masked-patch MSE
    loss_contrastive: Tensor  # () the ``cfg.contrastive`` form
    pred: Tensor  # (N, L, p*p*3) view 0's predicted patches
    mask: Tensor  # (N, L) view 0's mask, 1 = masked
    pooled: Tensor  # (N, 2, D) pooled visible-token features of both views
    mask_views: Tensor  # (N, 2, L) both views' masks


def patchify(imgs: Tensor, p: int) -> Tensor:
    """imgs: (N, 3, H, W) -> (N, L, p*p*3), patches row-major, pixels (p, p, 3) as MAE."""
    N, C, H, W = imgs.shape
    h, w = H // p, W // p
    x = imgs.reshape(N, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(N, h * w, p * p * C)


def make_projector(in_dim: int, dims: tuple[int, ...]) -> nn.Sequential:
    """(Linear -> BatchNorm1d -> ReLU) for every width but the last, then a plain Linear."""
    layers: list[nn.Module] = []
    prev = in_dim
    for i, d in enumerate(dims):
        layers.append(nn.Linear(prev, d))
        if i < len(dims) - 1:
            layers += [nn.BatchNorm1d(d), nn.ReLU(inplace=True)]
        prev = d
    return nn.Sequential(*layers)


class ViCMAE(nn.Module):
    """ViC-MAE: ViT encoder, MAE decoder, pooling, projector; forward returns both losses."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ViTEncoder.from_arch(cfg.arch, cfg.img_size, cfg.drop_path)
        D, p = self.encoder.embed_dim, self.encoder.patch_size

        # --- MAE decoder (only used for reconstruction; dropped at export) ---
        self.decoder_embed = nn.Linear(D, cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.register_buffer(
            "decoder_pos_embed",
            sincos_2d(cfg.decoder_dim, self.encoder.grid_size, cls_token=True)[None],
        )  # (1, 1+L, Dd)
        self.decoder_blocks = make_blocks(cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads)
        self.decoder_norm = nn.LayerNorm(cfg.decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(cfg.decoder_dim, p * p * 3)
        self.register_load_state_dict_pre_hook(resample_pos_embed_hook("decoder_pos_embed"))

        # --- contrastive branch: one projector for predictor and target (shared weights) ---
        dims = cfg.projector_dims or (2 * D, 2 * D, 2 * D)
        self.projector = make_projector(D, dims)

        nn.init.normal_(self.mask_token, std=0.02)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm):
            module.apply(init_weights)
        self.decoder_pred.apply(init_weights)
        self.projector.apply(init_weights)

    # ------------------------------------------------------------------ MAE parts
    def patchify(self, imgs: Tensor) -> Tensor:
        """imgs: (N, 3, H, W) -> (N, L, p*p*3)."""
        return patchify(imgs, self.encoder.patch_size)

    def random_masking(self, x: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
        """Keep a random subset of tokens per sample (argsort of uniform noise, as MAE).

        x: (N, L, D) -> kept (N, K, D), mask (N, L) with 1 = masked, ids_restore (N, L).
        Each row (so each view) draws its own noise, hence its own mask.
        """
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        noise = torch.rand(N, L, device=x.device)  # (N, L)
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]  # (N, K)
        x_kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, D))  # (N, K, D)
        mask = torch.ones(N, L, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)  # back to patch order
        return x_kept, mask, ids_restore

    def forward_encoder(self, imgs: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
        """imgs: (N, 3, H, W) -> latent (N, 1+K, D), mask (N, L), ids_restore (N, L)."""
        x = self.encoder.embed_patches(imgs)  # (N, L, D)
        x, mask, ids_restore = self.random_masking(x, mask_ratio)
        return self.encoder.forward_tokens(x), mask, ids_restore

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """latent: (N, 1+K, D) -> predicted patches (N, L, p*p*3)."""
        x = self.decoder_embed(latent)  # (N, 1+K, Dd)
        N, K1, Dd = x.shape
        L = ids_restore.shape[1]
        mask_tokens = self.mask_token.expand(N, L + 1 - K1, -1)  # (N, L-K, Dd)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # (N, L, Dd), shuffled order
        x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, Dd))  # patch order
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed  # (N, 1+L, Dd)
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x)[:, 1:, :]  # (N, L, p*p*3), cls dropped

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """imgs (N, 3, H, W), pred (N, L, p*p*3), mask (N, L) -> MSE on masked patches."""
        return reconstruction_loss(pred, self.patchify(imgs), mask, self.cfg.norm_pix_loss)

    # ------------------------------------------------------------------ ViC-MAE parts
    def pool(self, tokens: Tensor) -> Tensor:
        """tokens: (N, K, D) visible-patch outputs (no cls) -> global feature (N, D)."""
        if self.cfg.pooling == "mean":
            return tokens.mean(dim=1)
        if self.cfg.pooling == "max":
            return tokens.amax(dim=1)
        # GeM (Radenović et al.): clamp to positive, since the p-th root needs it; float32
        # because x**3 overflows bf16's precision quickly.
        p = self.cfg.gem_p
        x = tokens.float().clamp(min=1e-6).pow(p).mean(dim=1)
        return x.pow(1.0 / p).to(tokens.dtype)

    def forward(self, views: Tensor, mask_ratio: float | None = None) -> ViCMAEOutput:
        """views: (N, 2, 3, H, W) normalised images; view 0 (or both) is reconstructed.

        Returns ``ViCMAEOutput``; the trainer combines ``loss_recon + lambda * loss_contrastive``.
        """
        if views.ndim != 5 or views.shape[1] != 2:
            raise ValueError(f"views must be (N, 2, 3, H, W), got {tuple(views.shape)}")
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        N = views.shape[0]
        # View-major batch: rows [0, N) are view 0, [N, 2N) view 1. One encoder call for
        # both views; the ViT has no batch statistics, so this equals two calls.
        imgs = views.transpose(0, 1).reshape(2 * N, *views.shape[2:])  # (2N, 3, H, W)
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio)  # (2N, 1+K, D), (2N, L)

        pooled = self.pool(latent[:, 1:, :]).view(2, N, -1)  # (2, N, D), cls excluded
        # Projector per view, as Algorithm 1 and the authors' code: BatchNorm statistics
        # are per view.
        p = self.projector(pooled[0])  # (N, d)
        z = self.projector(pooled[1])  # (N, d)
        loss_contrastive = contrastive_loss(
            self.cfg.contrastive, p, z, self.cfg.temperature, self.cfg.gather_negatives
        )

        # Both views: one masked mean over the 2N rows. Every row masks the same number of
        # patches, so this is exactly the authors' 0.5 x (loss_view0 + loss_view1).
        n_rec = 2 * N if self.cfg.reconstruct_both else N
        pred = self.forward_decoder(latent[:n_rec], ids_restore[:n_rec])  # (n_rec, L, p*p*3)
        loss_recon = self.forward_loss(imgs[:n_rec], pred, mask[:n_rec])

        return ViCMAEOutput(
            loss_recon=loss_recon,
            loss_contrastive=loss_contrastive,
            pred=pred[:N],
            mask=mask[:N],
            pooled=pooled.transpose(0, 1),  # (N, 2, D)
            mask_views=mask.view(2, N, -1).transpose(0, 1),  # (N, 2, L)
        )
