"""Optimiser parameter groups: no weight decay on norms, biases, tokens, position embeddings.

(Layer-wise lr decay for fine-tuning is timm's ``param_groups_layer_decay``.)
"""

from __future__ import annotations

from torch import nn

from vicmae.checkpoint import unwrapped_name

# Names that never get weight decay (tokens and embeddings), besides every 1-D tensor
# (biases, LayerNorm and BatchNorm weights). pos_embed is a fixed buffer in pretraining,
# listed for encoders that learn it.
NO_DECAY_NAMES = ("cls_token", "mask_token", "pos_embed", "decoder_pos_embed")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters as a decay and a no-decay group (MAE's rule, as timm's).

    Returns dicts with ``params``, ``weight_decay`` and ``param_names`` (handy in logs and
    tests; torch optimisers keep unknown keys). DDP/compile-wrapped models are fine.
    """
    groups = {
        "decay": {"params": [], "param_names": [], "weight_decay": weight_decay},
        "no_decay": {"params": [], "param_names": [], "weight_decay": 0.0},
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        last = unwrapped_name(name).split(".")[-1]
        no_decay = param.ndim <= 1 or any(k in last for k in NO_DECAY_NAMES)
        group = groups["no_decay" if no_decay else "decay"]
        group["params"].append(param)
        group["param_names"].append(name)
    return [g for g in groups.values() if g["params"]]
