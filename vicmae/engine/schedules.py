"""Per-step schedules, precomputed as arrays (as in dinov2): lr warm-up + cosine, lambda.

:func:`lambda_schedule` is the contrastive weight at a fractional epoch; :func:`per_step`
samples it (or any function of the epoch) at every step.

The trainer indexes these arrays with its global step, so a resumed run reads exactly the
values an uninterrupted run would have read.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def warmup_cosine(
    base_value: float,
    final_value: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """``epochs x steps_per_epoch`` values: linear warm-up, then cosine to ``final_value``.

    Step ``s`` of the warm-up gets ``start + (base - start) * s / warmup_steps`` (so step 0 is
    ``start_warmup_value``); after it, the value follows half a cosine from ``base_value`` at
    the first post-warm-up step down to ``final_value`` (reached at the last step + 1).
    """
    total = int(epochs * steps_per_epoch)
    warmup = min(total, round(warmup_epochs * steps_per_epoch))
    warm = np.linspace(start_warmup_value, base_value, warmup, endpoint=False)
    steps = np.arange(total - warmup, dtype=np.float64)
    cosine = final_value + 0.5 * (base_value - final_value) * (
        1 + np.cos(math.pi * steps / max(1, total - warmup))
    )
    out = np.concatenate([warm, cosine])
    assert out.shape == (total,)
    return out


def per_step(fn: Callable[[float], float], epochs: int, steps_per_epoch: int) -> np.ndarray:
    """``fn(epoch_float)`` sampled at every step (epoch_float = step / steps_per_epoch)."""
    total = int(epochs * steps_per_epoch)
    return np.array([fn(s / steps_per_epoch) for s in range(total)], dtype=np.float64)


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule: ``base_lr x batch_size / 256`` (paper, Goyal et al.)."""
    return base_lr * batch_size / 256


def lambda_schedule(
    epoch: float, start_epoch: float = 200.0, weight: float = 0.025, ramp_epochs: float = 0.0
) -> float:
    """Contrastive weight lambda at a (fractional) epoch.

    Paper (Table 5): 0 until epoch 200, then 0.025. ``ramp_epochs > 0`` rises linearly from
    0 at ``start_epoch`` to ``weight`` at ``start_epoch + ramp_epochs`` instead of a step.
    Example: ``lambda_schedule(250.0) == 0.025``; ``lambda_schedule(199.9) == 0.0``.
    """
    if epoch < start_epoch:
        return 0.0
    if ramp_epochs > 0 and epoch < start_epoch + ramp_epochs:
        return weight * (epoch - start_epoch) / ramp_epochs
    return weight
