"""The pretrained frame encoder as a space-time ViT over clips, for video fine-tuning.

ViC-MAE pretrains a 2-D encoder on frames; the paper fine-tunes it end to end on Kinetics-400
and SSv2 (Table 1, Table 6) but the authors never released how (their FINETUNE.md: "coming
soon"). This module follows ST-MAE's fine-tuning model (facebookresearch/mae_st,
``models_vit.py`` and ``util/video_vit.py``; the paper's reference [26]) wherever it makes a
choice, and names another source where it does not:

- **Input** ``(N, 3, T, H, W)``, channels before time, as mae_st's ``PatchEmbed.forward``
  (``util/video_vit.py``). The loader gives ``(N, T, 3, H, W)`` (frames in time order in the
  views slot); :func:`clips_from_loader` is the one place that layout is permuted.
- **Tubelets**: one token per ``t x p x p`` block, a ``Conv3d`` with kernel = stride, t = 2
  (mae_st ``util/video_vit.py`` ``PatchEmbed``; ``main_finetune.py`` ``--t_patch_size``
  default 2). mae_st fine-tunes a video-pretrained kernel; ours is 2-D, so it is inflated as
  I3D does (Carreira & Zisserman 2017, "bootstrapping 3D filters from 2D filters"): the 2-D
  kernel repeated t times along time and divided by t, as TimeSformer's
  ``utils/checkpoint.py`` ``inflate_weight`` does. A still clip then embeds as the frame.
- **Positions**: mae_st's separable tables (``models_vit.py``, ``sep_pos_embed``; True in
  ``main_finetune.py``): a spatial table added at every time step plus a temporal table of
  ``T / t`` rows added at every spatial position. The spatial table is the pretrained one
  (class row + grid), resampled to the clip's grid as :mod:`vicmae.model.pos_embed` does;
  the temporal table is learned and starts at zero, as TimeSformer's ``time_embed``
  (``timesformer/models/vit.py``: ``nn.Parameter(torch.zeros(1, num_frames, embed_dim))``,
  absent from the image checkpoint it starts from). The class token gets the class row
  only, no temporal term (mae_st: ``pos_embed_class``; TimeSformer: the same).
- **Attention**: joint space-time, every token attends to all ``1 + T/t * L`` tokens
  (mae_st ``util/video_vit.py`` ``Attention``: full attention over the sequence). The
  encoder's own timm blocks do exactly that on the longer sequence: they are reused.
- **Token order**: time-major (time step, then row, then column), as mae_st's
  ``einsum("ncts->ntsc")`` then ``view(N, T * L, C)``.
- **Output**: ``forward_features`` returns every token after the final norm, the contract of
  :class:`~vicmae.model.vit.ViTEncoder`, so the 2-D classifier's pooling (class token, paper
  appendix A; or the patch mean) applies unchanged. The class token is the encoder's
  (mae_st ``main_finetune.py``: ``cls_embed`` True).

Example::

    encoder = ViTEncoder.from_arch("vit_base_patch16")   # pretrained weights loaded
    video = inflate(encoder, num_frames=16, tubelet=2)   # shares blocks, norm, cls token
    feats = video(clips_from_loader(x))                  # x: (N, 16, 3, 224, 224) -> (N, 768)
"""

from __future__ import annotations

import torch
from timm.layers import PatchEmbed
from torch import Tensor, nn

from vicmae.model.pos_embed import resample_pos_embed, resample_pos_embed_hook
from vicmae.model.vit import ViTEncoder

__all__ = ["TubeletEmbed", "VideoViT", "clips_from_loader", "inflate"]


def clips_from_loader(views: Tensor) -> Tensor:
    """The loader's clip layout ``(N, T, 3, H, W)`` -> the model's ``(N, 3, T, H, W)``.

    The only place the layout changes: mae_st's model (and ``nn.Conv3d``) take channels
    before time, the loader stores a clip's frames where an image sample keeps its views.
    """
    if views.ndim != 5 or views.shape[2] != 3:
        raise ValueError(f"expected loader clips (N, T, 3, H, W), got {tuple(views.shape)}")
    return views.permute(0, 2, 1, 3, 4)  # (N, 3, T, H, W)


class TubeletEmbed(nn.Module):
    """``(N, 3, T, H, W)`` -> ``(N, T/t * H/p * W/p, D)``: one token per ``t x p x p`` tubelet.

    mae_st's ``PatchEmbed`` (``util/video_vit.py``): a Conv3d with kernel = stride.
    timm has no 3-D patch embedding; torch's Conv3d is the whole of it.
    """

    def __init__(
        self, embed_dim: int, patch_size: int, tubelet: int, in_chans: int = 3, bias: bool = True
    ) -> None:
        super().__init__()
        self.patch_size, self.tubelet = patch_size, tubelet
        kernel = (tubelet, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel, bias=bias)

    @classmethod
    def inflate(cls, patch_embed: PatchEmbed, tubelet: int) -> TubeletEmbed:
        """The 2-D patch embedding as tubelets: kernel repeated ``tubelet`` times along time
        and divided by ``tubelet`` (I3D; TimeSformer ``utils/checkpoint.py``), bias kept.

        On ``tubelet`` identical frames each token is then the 2-D token of that frame.
        """
        conv = patch_embed.proj
        if not isinstance(patch_embed.norm, nn.Identity):
            raise ValueError("cannot inflate a patch embedding with a norm layer")
        bias = conv.bias is not None
        out = cls(conv.out_channels, conv.kernel_size[0], tubelet, conv.in_channels, bias)
        out.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            w = conv.weight.unsqueeze(2).expand(-1, -1, tubelet, -1, -1)  # (D, 3, t, p, p)
            out.proj.weight.copy_(w / tubelet)
            if bias:
                out.proj.bias.copy_(conv.bias)
        return out

    def forward(self, clips: Tensor) -> Tensor:
        """clips: (N, 3, T, H, W) -> (N, T/t * H/p * W/p, D), time-major."""
        x = self.proj(clips)  # (N, D, T/t, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (N, T'*L, D)


class VideoViT(nn.Module):
    """A space-time ViT made from a :class:`ViTEncoder`: build it with :func:`inflate`.

    The encoder's blocks, final norm and class token are this model's own (the same
    modules and Parameter, not copies); the tubelet embedding is inflated from its patch
    embedding; the spatial position table is the encoder's, or a resampled copy when the
    clip's resolution differs, and stays what it was there: a fixed buffer, or a learned
    Parameter after ``encoder.learn_pos_embed()`` (what fine-tuning uses, as mae_st's
    ``pos_embed_spatial`` is learned). State-dict keys: ``patch_embed.proj.*``,
    ``cls_token``, ``pos_embed`` (1, 1+L, D), ``pos_embed_temporal`` (1, T/t, D),
    ``blocks.*``, ``norm.*``.
    """

    def __init__(
        self,
        encoder: ViTEncoder,
        num_frames: int,
        tubelet: int = 2,  # mae_st main_finetune.py --t_patch_size default
        img_size: int | None = None,
    ) -> None:
        super().__init__()
        img_size = encoder.img_size if img_size is None else img_size
        if tubelet < 1 or num_frames % tubelet:
            raise ValueError(f"num_frames {num_frames} is not a multiple of tubelet {tubelet}")
        if img_size % encoder.patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch {encoder.patch_size}")
        self.img_size, self.patch_size = img_size, encoder.patch_size
        self.embed_dim, self.depth = encoder.embed_dim, encoder.depth
        self.num_frames, self.tubelet = num_frames, tubelet
        self.grid_size = img_size // encoder.patch_size
        self.t_size = num_frames // tubelet  # tokens along time
        self.num_patches = self.t_size * self.grid_size**2

        self.patch_embed = TubeletEmbed.inflate(encoder.patch_embed, tubelet)
        self.cls_token = encoder.cls_token
        table = encoder.pos_embed  # (1, 1+G*G, D), a buffer or a learned Parameter
        if self.grid_size != encoder.grid_size:
            resampled = resample_pos_embed(table.detach(), self.grid_size)  # (1, 1+g*g, D)
            table = nn.Parameter(resampled) if isinstance(table, nn.Parameter) else resampled
        if isinstance(table, nn.Parameter):
            self.pos_embed = table
        else:
            self.register_buffer("pos_embed", table)
        ref = encoder.cls_token
        self.pos_embed_temporal = nn.Parameter(
            torch.zeros(1, self.t_size, self.embed_dim, device=ref.device, dtype=ref.dtype)
        )  # (1, T', D)
        self.blocks = encoder.blocks
        self.norm = encoder.norm
        # A state dict saved at another resolution: its spatial table is resampled, as the
        # 2-D encoder's is.
        self.register_load_state_dict_pre_hook(resample_pos_embed_hook("pos_embed"))

    def no_weight_decay(self) -> set[str]:
        """Names exempt from weight decay (mae_st ``models_vit.py`` ``no_weight_decay``:
        the class token and every position table)."""
        return {"cls_token", "pos_embed", "pos_embed_temporal"}

    def _check(self, clips: Tensor) -> None:
        want = (3, self.num_frames, self.img_size, self.img_size)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != want:
            raise ValueError(
                f"expected clips (N, {', '.join(map(str, want))}) as (N, 3, T, H, W), got "
                f"{tuple(clips.shape)}; loader clips (N, T, 3, H, W) go through "
                "clips_from_loader first"
            )

    def embed_patches(self, clips: Tensor) -> Tensor:
        """clips: (N, 3, T, H, W) -> tubelet tokens with positions added: (N, T'*L, D)."""
        self._check(clips)
        x = self.patch_embed(clips)  # (N, T'*L, D), time-major
        n, tl, d = x.shape
        spatial = self.pos_embed[:, None, 1:, :]  # (1, 1, L, D)
        temporal = self.pos_embed_temporal[:, :, None, :]  # (1, T', 1, D)
        x = x.view(n, self.t_size, tl // self.t_size, d) + spatial + temporal  # (N, T', L, D)
        return x.flatten(1, 2)  # (N, T'*L, D)

    def forward_features(self, clips: Tensor) -> Tensor:
        """clips: (N, 3, T, H, W) -> all tokens after the final norm: (N, 1 + T'*L, D)."""
        x = self.embed_patches(clips)  # (N, T'*L, D)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)  # (N, 1, D)
        x = torch.cat([cls, x], dim=1)  # (N, 1+T'*L, D)
        x = self.blocks(x)  # joint space-time attention over every token
        return self.norm(x)

    def forward(self, clips: Tensor) -> Tensor:
        """clips: (N, 3, T, H, W) -> class-token feature (N, D)."""
        return self.forward_features(clips)[:, 0]


def inflate(
    encoder: ViTEncoder, num_frames: int, tubelet: int = 2, img_size: int | None = None
) -> VideoViT:
    """The frame encoder as a space-time ViT over ``num_frames``-frame clips.

    Args:
        encoder: the pretrained 2-D encoder (weights loaded; call ``learn_pos_embed()``
            first to fine-tune the spatial table). Its blocks, norm and class token become
            the video model's: train one, you train the other.
        num_frames: frames per clip, a multiple of ``tubelet`` (mae_st fine-tunes 16).
        tubelet: frames per token (mae_st: 2).
        img_size: the clip's side; default the encoder's. Another size resamples the
            spatial table.

    On a clip of identical frames, each tubelet token equals the encoder's patch token of
    that frame, and the temporal table starts at zero. With one token along time
    (``num_frames == tubelet``) the features are then exactly the encoder's on the frame.
    With ``T' = num_frames / tubelet > 1`` every patch token is present ``T'`` times, so
    attention weighs the class token's key ``1 / T'`` as much as the frame model does:
    the encoder with ``-log T'`` added to the attention logit of that key gives exactly
    these features (``tests/test_video_model.py`` checks both).
    """
    return VideoViT(encoder, num_frames, tubelet, img_size)
