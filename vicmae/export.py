"""Export the ViC-MAE encoder as a timm ``VisionTransformer`` state dict.

Our encoder already uses timm's parameter names, so the export keeps the ``encoder.*``
entries, drops the prefix, and drops the decoder, mask token and projector. Load it with::

    timm.create_model("vit_base_patch16_224", pretrained=True,
                      pretrained_cfg_overlay=dict(file="vit.pth"))

timm loads strictly when the model's ``num_classes`` equals the pretrained config's (1000
for ``vit_*_224``), so by default the file carries a zero classifier ``head`` of 1000
classes: it holds no pretrained information (MAE also starts fine-tuning from a ~zero
head). With any other ``num_classes`` (0 for features only) timm drops it and loads the
encoder non-strictly; ``head_classes=None`` omits it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vicmae.checkpoint import load_checkpoint, unwrapped_name
from vicmae.vit import VIT_ARCHS, vit_arch

log = logging.getLogger(__name__)

_REQUIRED = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight")


def _load_source(source: Any) -> tuple[dict[str, Tensor], str | None]:
    """Return (ViCMAE state dict, arch from the checkpoint's config or None)."""
    if isinstance(source, nn.Module):
        module = getattr(source, "module", source)  # DDP
        module = getattr(module, "_orig_mod", module)  # torch.compile
        cfg = getattr(module, "cfg", None)
        return module.state_dict(), getattr(cfg, "arch", None)
    if isinstance(source, (str, os.PathLike)):
        # The one safe loader (weights_only): a file that would run code is refused.
        source = load_checkpoint(source)
    if not isinstance(source, dict):
        raise ValueError(f"cannot export from a {type(source).__name__}: expected a state dict")
    arch = None
    if "model" in source and isinstance(source["model"], dict):
        config = source.get("config") or {}
        model_cfg = config.get("model") if isinstance(config, dict) else None
        if isinstance(model_cfg, dict):
            arch = model_cfg.get("arch")
        source = source["model"]
    return source, arch


def encoder_state_dict(source: Any) -> dict[str, Tensor]:
    """timm-named encoder tensors from a checkpoint path, checkpoint dict, state dict or model."""
    state, _ = _load_source(source)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = unwrapped_name(key)
        if key.startswith("encoder."):
            out[key[len("encoder.") :]] = value.detach().cpu().contiguous()
    missing = [k for k in _REQUIRED if k not in out]
    if missing:
        raise ValueError(f"no ViC-MAE encoder in the source (missing encoder.{missing[0]})")
    return out


def export_timm(
    source: Any,
    out_path: str | os.PathLike,
    arch: str | None = None,
    head_classes: int | None = 1000,
) -> dict[str, Any]:
    """Write the encoder of a ViC-MAE checkpoint as a timm ViT state dict.

    Args:
        source: a checkpoint path (dict with ``"model"`` and ``"config"``), such a dict, a raw
            ViCMAE state dict, or a ViCMAE module (DDP/compiled wrappers are unwrapped).
        out_path: file to write (atomically: ``out_path.tmp`` then rename).
        arch: expected architecture (e.g. ``"vit_base_patch16"``); defaults to the
            checkpoint's ``config["model"]["arch"]``. Shapes are checked against it.
        head_classes: size of the zero classifier head to include (see module docstring);
            None for no head.

    Returns:
        A JSON-friendly summary: ``out``, ``arch``, ``embed_dim``, ``depth``, ``patch_size``,
        ``num_tensors``, ``num_params`` (encoder only), ``head_classes``. The file holds the
        state dict (keys ``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``,
        ``norm.*`` [, ``head.*``]); ``encoder_state_dict`` gives it without writing.

    Example: ``export_timm("runs/pt/last.pt", "vit.pth")``.
    """
    state, ckpt_arch = _load_source(source)
    arch = arch or ckpt_arch
    out = encoder_state_dict(state)
    dim = out["cls_token"].shape[-1]
    n_blocks = len({k.split(".")[1] for k in out if k.startswith("blocks.")})
    got_patch = out["patch_embed.proj.weight"].shape[-1]
    if arch is None:  # a raw state dict: name it by its shapes when a known size fits
        fits = [
            name
            for name, a in VIT_ARCHS.items()
            if (a.embed_dim, a.depth, a.patch_size) == (dim, n_blocks, got_patch)
        ]
        summary_arch = fits[0] if fits else None
    else:
        summary_arch = arch
    summary: dict[str, Any] = {
        "out": str(out_path),
        "arch": summary_arch,
        "embed_dim": int(dim),
        "depth": n_blocks,
        "patch_size": int(got_patch),
        "num_tensors": len(out),  # encoder tensors, head excluded
        "num_params": sum(v.numel() for k, v in out.items() if k != "pos_embed"),
        "head_classes": head_classes or 0,
    }
    if arch is not None:
        a = vit_arch(arch)
        if (dim, n_blocks, got_patch) != (a.embed_dim, a.depth, a.patch_size):
            raise ValueError(
                f"checkpoint encoder (dim {dim}, depth {n_blocks}, patch {got_patch}) "
                f"is not {arch} (dim {a.embed_dim}, depth {a.depth}, patch {a.patch_size})"
            )
    if head_classes:
        out["head.weight"] = torch.zeros(head_classes, dim, dtype=out["cls_token"].dtype)
        out["head.bias"] = torch.zeros(head_classes, dtype=out["cls_token"].dtype)

    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    torch.save(out, tmp)
    os.replace(tmp, out_path)
    return summary
