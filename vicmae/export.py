"""Export the ViC-MAE encoder as a timm ViT state dict, and the timm call that loads it.

Our encoder already uses timm's parameter names, so the export keeps the ``encoder.*``
entries, drops the prefix, and drops the decoder, mask token and projector.
:func:`timm_create_args` gives the exact ``timm.create_model`` arguments that rebuild the
encoder's features from the file, e.g. for a ViT-B/16 pretrained at 224::

    timm.create_model("vit_base_patch16_224", pretrained=True,
                      pretrained_cfg_overlay=dict(file="vit.pth"), num_classes=0,
                      global_pool="token")

- ``global_pool="token"``: the class token after the final norm, the feature the paper
  uses (appendix A). Mean pooling of the patch tokens needs ``global_pool="avg",
  fc_norm=False``: timm's ``"avg"`` alone moves the final norm after the pooling into a
  new, untrained ``fc_norm`` and silently leaves the trained ``norm`` out.
- Another architecture than timm's named ones (e.g. ``vit_pico_patch8``) or another
  resolution adds ``embed_dim``, ``depth``, ``num_heads``, ``patch_size`` and ``img_size``.
  At another ``img_size`` timm resamples the position table bicubically on load, exactly
  as this project's encoder does (``vicmae.model.pos_embed``), so the features agree.

The file holds the encoder alone (no classifier: pretraining trains none). timm loads
strictly only when the model's ``num_classes`` equals the pretrained config's (1000 for
``vit_*_224``); with any other ``num_classes`` (0 for features only, or a new head's
classes) it loads the encoder non-strictly and the head starts fresh. ``head_classes=1000``
(``vicmae export timm --with-head``) adds a zero head of that size, for a strict load at
``num_classes=1000``: it holds no pretrained information (MAE also starts fine-tuning from a
~zero head).

Weights that hold NaN or infinity (a run that diverged, a damaged file) are refused
(:class:`NonFiniteWeightsError`, naming the first such tensor) unless
``allow_non_finite=True``, which writes them with a loud warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import torch
from torch import Tensor, nn

from vicmae.engine.checkpoint import load_checkpoint, unwrapped_name
from vicmae.model.vit import VIT_ARCHS, vit_arch
from vicmae_data.atomic import atomic_path

log = logging.getLogger(__name__)

_REQUIRED = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight")


class NonFiniteWeightsError(ValueError):
    """The encoder's weights hold NaN or infinite values (the message names the first)."""


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
        if not isinstance(key, str):
            raise ValueError(f"not a model state dict: it has a key {key!r}, not a name")
        key = unwrapped_name(key)
        if key.startswith("encoder."):
            if not isinstance(value, Tensor):
                raise ValueError(
                    f"{key} is a {type(value).__name__}, not a tensor: not a model state dict"
                )
            out[key[len("encoder.") :]] = value.detach().cpu().contiguous()
    missing = [k for k in _REQUIRED if k not in out]
    if missing:
        raise ValueError(f"no ViC-MAE encoder in the source (missing encoder.{missing[0]})")
    return out


def export_timm(
    source: Any,
    out_path: str | os.PathLike,
    arch: str | None = None,
    head_classes: int | None = None,
    allow_non_finite: bool = False,
) -> dict[str, Any]:
    """Write the encoder of a ViC-MAE checkpoint as a timm ViT state dict.

    Args:
        source: a checkpoint path (dict with ``"model"`` and ``"config"``), such a dict, a raw
            ViCMAE state dict, or a ViCMAE module (DDP/compiled wrappers are unwrapped).
        out_path: file to write (atomically: a hidden temporary name, then a rename).
        arch: expected architecture (e.g. ``"vit_base_patch16"``); defaults to the
            checkpoint's ``config["model"]["arch"]``. Shapes are checked against it.
        head_classes: size of a zero classifier head to include (see module docstring);
            None (the default) for the encoder alone.
        allow_non_finite: write weights holding NaN or infinity (with a warning) instead of
            raising :class:`NonFiniteWeightsError`.

    Returns:
        A JSON-friendly summary: ``out``, ``arch``, ``embed_dim``, ``depth``, ``patch_size``,
        ``num_tensors``, ``num_params`` (encoder only), ``head_classes``, ``img_size`` (of
        the position table). The file holds the
        state dict (keys ``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``,
        ``norm.*`` [, ``head.*``]); ``encoder_state_dict`` gives it without writing.

    Example: ``export_timm("runs/pt/last.pt", "vit.pth")``.
    """
    state, ckpt_arch = _load_source(source)
    arch = arch or ckpt_arch
    out = encoder_state_dict(state)
    check_finite(out, allow_non_finite)
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

    summary["img_size"] = int(math.isqrt(out["pos_embed"].shape[1] - 1) * got_patch)
    with atomic_path(out_path) as tmp:
        torch.save(out, tmp)
    return summary


def check_finite(state: dict[str, Tensor], allow: bool = False) -> None:
    """Raise :class:`NonFiniteWeightsError` naming the first tensor of ``state`` that holds
    NaN or infinity (with how many of its values, and how many tensors in all); with
    ``allow``, log that as a warning instead."""
    bad = {}
    for key, value in state.items():
        if value.is_floating_point() or value.is_complex():
            n = int((~torch.isfinite(value)).sum())
            if n:
                bad[key] = (n, value.numel())
    if not bad:
        return
    key, (n, total) = next(iter(bad.items()))
    message = (
        f"{len(bad)} of {len(state)} encoder tensors hold NaN or infinite values (first: "
        f"{key}, {n:,} of {total:,} values)"
    )
    if not allow:
        raise NonFiniteWeightsError(
            f"{message}: a run that diverged or a damaged file; --allow-non-finite writes it anyway"
        )
    log.warning("exporting non-finite weights: %s", message)


# timm's registered ViTs of our sizes (at 224; timm resamples other sizes on load).
TIMM_NAMES = {
    "vit_tiny_patch16": "vit_tiny_patch16_224",
    "vit_small_patch16": "vit_small_patch16_224",
    "vit_base_patch16": "vit_base_patch16_224",
    "vit_large_patch16": "vit_large_patch16_224",
    "vit_huge_patch14": "vit_huge_patch14_224",
}
POOLS = ("cls", "mean")


def timm_create_args(
    arch: str,
    file: str | os.PathLike,
    img_size: int = 224,
    pool: str = "cls",
    num_classes: int = 0,
) -> dict[str, Any]:
    """The ``timm.create_model`` arguments that rebuild the encoder's features from ``file``.

    Args:
        arch: our architecture name (``vicmae.model.vit.VIT_ARCHS``).
        file: the exported state dict.
        img_size: the input size to use the model at (timm resamples the positions).
        pool: ``"cls"`` (the class token, paper appendix A) or ``"mean"`` (patch mean).
        num_classes: 0 for features; a class count for a new (untrained) head.

    Returns:
        ``{"model_name": ..., **kwargs}`` in call order; ``timm.create_model(**args)``
        builds the model. See the module docstring for why each argument is there.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    a = vit_arch(arch)
    if img_size % a.patch_size:
        raise ValueError(f"img_size {img_size} is not a multiple of patch {a.patch_size}")
    args: dict[str, Any] = {
        "model_name": TIMM_NAMES.get(arch, "vit_base_patch16_224"),
        "pretrained": True,
        "pretrained_cfg_overlay": {"file": str(file)},
        "num_classes": num_classes,
    }
    if pool == "cls":
        args["global_pool"] = "token"
    else:
        args.update(global_pool="avg", fc_norm=False)
    if arch not in TIMM_NAMES:  # a size timm has no name for: every dimension spelled out
        args.update(
            embed_dim=a.embed_dim, depth=a.depth, num_heads=a.num_heads, patch_size=a.patch_size
        )
    if arch not in TIMM_NAMES or img_size != 224:
        args["img_size"] = img_size
    return args


def timm_create_call(args: dict[str, Any]) -> str:
    """``timm_create_args``'s result as one line of Python: ``timm.create_model("...", ...)``."""

    def py(value: Any) -> str:
        if isinstance(value, dict):
            return "dict(" + ", ".join(f"{k}={py(v)}" for k, v in value.items()) + ")"
        if isinstance(value, str):
            return json.dumps(value)  # double quotes, escapes as Python reads them
        return repr(value)

    rest = ", ".join(f"{k}={py(v)}" for k, v in args.items() if k != "model_name")
    return f"timm.create_model({py(args['model_name'])}, {rest})"
