"""The optimiser and its parameter groups: no weight decay on biases and 1-D weights (norms).

The rule is timm's ``param_groups_weight_decay``, which the authors' ``pretrain.py`` calls
with an empty exemption list: a parameter is exempt when it is 1-D or its name ends in
``.bias``. The class and mask tokens are 3-D, so the authors' pretraining decays them; so
do both our recipes (the paper states only the value 0.05, Table 5). A model that names
more exemptions in ``no_weight_decay()`` (timm's convention, e.g. an encoder whose position
embeddings are learned) gets them. Fine-tuning uses timm's ``param_groups_layer_decay``.

Not timm's function itself: ours also returns the names in each group, which the logs and
the tests read. :func:`build_optimizer` makes ``optim.name`` (AdamW or SGD) over them.
"""

from __future__ import annotations

import torch
from torch import nn

from vicmae.config import OptimConfig
from vicmae.engine.checkpoint import unwrapped_name


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters as a decay and a no-decay group (timm's / the authors' rule).

    Returns dicts with ``params``, ``weight_decay`` and ``param_names`` (handy in logs and
    tests; torch optimisers keep unknown keys). DDP/compile-wrapped models are fine.
    """
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    exempt = set(inner.no_weight_decay()) if hasattr(inner, "no_weight_decay") else set()
    groups = {
        "decay": {"params": [], "param_names": [], "weight_decay": weight_decay},
        "no_decay": {"params": [], "param_names": [], "weight_decay": 0.0},
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        plain = unwrapped_name(name)
        no_decay = param.ndim <= 1 or plain.endswith(".bias") or plain in exempt
        group = groups["no_decay" if no_decay else "decay"]
        group["params"].append(param)
        group["param_names"].append(name)
    return [g for g in groups.values() if g["params"]]


def build_optimizer(
    params: nn.Module | list[dict], optim: OptimConfig, device: torch.device
) -> torch.optim.Optimizer:
    """``optim.name`` over ``params`` (a model: weight decay on weight matrices only).

    Group ``lr`` values are set by the engine every step from its schedule.
    """
    groups = param_groups(params, optim.weight_decay) if isinstance(params, nn.Module) else params
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=optim.momentum)
    fused = optim.fused and device.type == "cuda"
    return torch.optim.AdamW(groups, lr=0.0, betas=optim.betas, fused=fused or None)
