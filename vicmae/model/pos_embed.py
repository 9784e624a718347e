"""2D sine-cosine position embeddings (MAE; ViC-MAE appendix A) and their resampling.

Half of the channels encode the row, half the column; each half is
``[sin(pos * omega), cos(pos * omega)]`` with ``omega = 1 / 10000^(k / (D/4))``.
Written in torch (not numpy) so that it also runs on the ``meta`` device.

A model built at one resolution and loaded at another keeps the *pretrained* table and
resamples its grid bicubically, with timm's own ``resample_abs_pos_embed`` and the
arguments timm's ViT uses when it loads a checkpoint (bicubic, ``antialias=True``): the
exported encoder loaded in timm at any size then computes the same features as this
project's encoder at that size. MAE's and the authors' fine-tuning
(``util/pos_embed.py: interpolate_pos_embed``) also resample bicubically, but with torch's
plain kernel (``antialias=False``, cubic a = -0.75; the antialiased path uses PIL's
a = -0.5), so their tables differ from timm's by up to ~0.05 per entry, growing or
shrinking the grid. We follow timm, where the exported weights are used.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn


def sincos_1d(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """1D sin-cos embedding of positions.

    Args:
        embed_dim: output width, even.
        pos: (M,) positions.

    Returns:
        (M, embed_dim) float64 tensor.
    """
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64, device=pos.device)
    omega = 1.0 / 10000 ** (omega / (embed_dim / 2.0))  # (D/2,)
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]  # (M, D/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, D)


def sincos_2d(embed_dim: int, grid_size: int, cls_token: bool = False) -> torch.Tensor:
    """2D sin-cos embedding of a square ``grid_size x grid_size`` patch grid.

    Args:
        embed_dim: output width, a multiple of 4.
        grid_size: patches per side.
        cls_token: prepend a zero row for the class token (MAE and timm keep the cls
            position in ``pos_embed``; zeros leave the cls token unchanged).

    Returns:
        (grid_size**2 [+1], embed_dim) float32 tensor, row-major over the grid.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4, got {embed_dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    # MAE builds meshgrid(w, h): the first half of channels encodes the column (w).
    grid_h, grid_w = torch.meshgrid(coords, coords, indexing="ij")  # (G, G) each
    emb_w = sincos_1d(embed_dim // 2, grid_w)  # (G*G, D/2)
    emb_h = sincos_1d(embed_dim // 2, grid_h)  # (G*G, D/2)
    emb = torch.cat([emb_w, emb_h], dim=1)  # (G*G, D)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def resample_pos_embed(table: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(1, 1+G*G, D) table with a cls row -> (1, 1+grid_size**2, D), bicubic as timm loads it.

    The cls row is kept; the G x G grid is resampled by timm's ``resample_abs_pos_embed``
    with the arguments of timm's ViT checkpoint filter (bicubic, antialias).
    """
    old = math.isqrt(table.shape[1] - 1)
    if old * old != table.shape[1] - 1:
        raise ValueError(f"position table of {table.shape[1] - 1} patches is not a square grid")
    return resample_abs_pos_embed(
        table, new_size=[grid_size, grid_size], old_size=[old, old], num_prefix_tokens=1
    )


def resample_pos_embed_hook(name: str) -> Callable[..., None]:
    """A ``load_state_dict`` pre-hook: a table of another grid size is resampled to ours.

    Fine-tuning, probing or pretraining on at another resolution than the checkpoint's
    loads every weight and the checkpoint's positions, resampled (see the module docstring).
    """

    def hook(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
        key = prefix + name
        own = getattr(module, name)
        if key in state_dict and state_dict[key].shape != own.shape:
            loaded = state_dict[key]
            if loaded.ndim != 3 or loaded.shape[-1] != own.shape[-1]:
                return  # not a position table of our width: let load_state_dict report it
            state_dict[key] = resample_pos_embed(loaded, math.isqrt(own.shape[1] - 1))

    return hook
