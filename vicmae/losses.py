"""ViC-MAE losses: masked-patch reconstruction, symmetrised InfoNCE, contrastive weight schedule.

InfoNCE, faithful to the paper's definition (eq. 3) rather than to the letter of
Algorithm 1:

- eq. 3 divides the similarity by the temperature, ``exp(p.z / tau)``. Algorithm 1's
  ``sim * exp(tau)`` is CLIP's learned *log-scale* notation; with tau = 0.1 it would
  scale logits by 1.105, i.e. almost no temperature at all. We use ``sim / tau``.
- Algorithm 1's ``ctr`` returns ``2 * loss``; eq. 3 and the text have no factor 2 (it is
  a leftover of MoCo v3, whose ``ctr`` returns ``2 * tau * loss``). A constant factor
  only rescales lambda, so we drop it: ``loss = ctr(p, z) + ctr(z, p)``.
- The logits are Algorithm 1's N x N matrix (positives on the diagonal, the other
  samples of the *global* batch as negatives, as the authors' code gathers them across
  GPUs); eq. 3's "2N" denominator with same-branch negatives (SimCLR's NT-Xent) is not
  what Algorithm 1 computes.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy, normalize

from vicmae.distributed import gather_with_grad, get_rank, get_world_size


def _ctr(q: Tensor, k_all: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of q (n, d) against keys k_all (M, d); q[i]'s positive: k_all[labels[i]]."""
    logits = q @ k_all.T / temperature  # (n, M)
    return cross_entropy(logits, labels)


def info_nce(p: Tensor, z: Tensor, temperature: float = 0.1, gather: bool = True) -> Tensor:
    """Symmetrised InfoNCE ``ctr(p, z) + ctr(z, p)`` with positives on the diagonal.

    Args:
        p: (n, d) projections of view i on this rank (l2-normalised here; any scale in).
        z: (n, d) projections of view j, row k the positive of p's row k.
        temperature: tau in eq. 3.
        gather: take negatives from every rank's batch (all-gather with gradients) when
            torch.distributed is initialised; a no-op with one process.

    Returns:
        Scalar: the mean over this rank's rows. Averaged over ranks (as DDP averages
        gradients) it equals the loss of one process holding the whole global batch.
    """
    # float32: the logits / tau of a bf16 autocast region would lose the small differences.
    p = normalize(p.float(), dim=1)
    z = normalize(z.float(), dim=1)
    n = p.shape[0]
    offset = 0
    p_all, z_all = p, z
    if gather and get_world_size() > 1:
        pz_all = gather_with_grad(torch.cat([p, z], dim=1))  # (world*n, 2d): one collective
        p_all, z_all = pz_all.split(p.shape[1], dim=1)
        offset = get_rank() * n
    labels = torch.arange(n, device=p.device) + offset  # (n,)
    return _ctr(p, z_all, labels, temperature) + _ctr(z, p_all, labels, temperature)


def reconstruction_loss(
    pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = False
) -> Tensor:
    """Mean squared error on masked patches only (MAE, paper eq. 1-2).

    Args:
        pred: (N, L, p*p*3) predicted patches.
        target: (N, L, p*p*3) true patches (``patchify(imgs)``).
        mask: (N, L), 1 = masked (the patches the loss counts), 0 = visible.
        norm_pix: normalise each target patch by its own mean and variance (MAE's
            ``norm_pix_loss``; the authors' code turns it on).
    """
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred.float() - target.float()) ** 2).mean(dim=-1)  # (N, L) per patch
    return (loss * mask).sum() / mask.sum()


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
