"""Fixed 2D sine-cosine position embeddings (as in MAE, ViC-MAE appendix A).

Half of the channels encode the row, half the column; each half is
``[sin(pos * omega), cos(pos * omega)]`` with ``omega = 1 / 10000^(k / (D/4))``.
Written in torch (not numpy) so that it also runs on the ``meta`` device.
"""

from __future__ import annotations

import torch


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
