"""Optimizer parameter groups: no weight decay on norms, biases and tokens; layer-wise lr decay."""

from __future__ import annotations

from torch import nn

from vicmae.checkpoint import unwrapped_name

# Substrings of names that never get weight decay (embeddings), besides every 1-D tensor
# (biases, LayerNorm and BatchNorm weights). pos_embed is a fixed buffer here, listed for
# models that learn it.
NO_DECAY_NAMES = ("cls_token", "mask_token", "pos_embed", "decoder_pos_embed")


def layer_id(name: str, num_layers: int) -> int:
    """Layer index of an encoder parameter for layer-wise lr decay (BEiT/MAE rule).

    Embeddings (``cls_token``, ``pos_embed``, ``patch_embed.*``) are layer 0, ``blocks.i.*``
    is layer ``i + 1``, anything else (final norm, head) is ``num_layers``. As in MAE,
    ``num_layers = depth + 1``. A leading ``encoder.`` (and DDP/compile prefixes) is ignored.
    Example: ``layer_id("encoder.blocks.3.attn.qkv.weight", 13) == 4``.
    """
    name = unwrapped_name(name)
    if name.startswith("encoder."):
        name = name[len("encoder.") :]
    if name in ("cls_token", "pos_embed", "mask_token") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float | None = None,
    num_layers: int | None = None,
) -> list[dict]:
    """Split trainable parameters into decay / no-decay groups for AdamW.

    Args:
        model: any module (ViCMAE, its encoder, a fine-tune classifier; DDP-wrapped is fine).
        weight_decay: decay of weight matrices; biases, norms, cls/mask tokens and
            position embeddings get 0.
        layer_decay: if given (fine-tune), also split by ``layer_id`` and give each group
            ``"lr_scale" = layer_decay ** (num_layers - layer_id)``; the trainer multiplies
            its lr by ``group["lr_scale"]``.
        num_layers: encoder depth + 1; required with ``layer_decay``.

    Returns:
        A list of dicts with ``params``, ``weight_decay`` (and ``lr_scale``), and
        ``param_names`` (list of names, handy for logging and tests; torch optimizers keep
        unknown keys).
    """
    if layer_decay is not None and num_layers is None:
        raise ValueError("num_layers is required with layer_decay")
    groups: dict[tuple[str, int], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        short = unwrapped_name(name)
        no_decay = param.ndim <= 1 or any(k in short.split(".")[-1] for k in NO_DECAY_NAMES)
        layer = layer_id(short, num_layers) if layer_decay is not None else 0
        key = ("no_decay" if no_decay else "decay", layer)
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
            if layer_decay is not None:
                groups[key]["lr_scale"] = layer_decay ** (num_layers - layer)
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return list(groups.values())
