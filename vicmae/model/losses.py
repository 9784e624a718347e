"""ViC-MAE losses: masked-patch reconstruction and two contrastive forms.

The paper and the authors' released code describe the contrastive term in two different
ways; both are here, chosen by ``ModelConfig.contrastive``:

``"ntxent"`` (:func:`nt_xent`): SimCLR's NT-Xent over the 2N projections of a batch of N
pairs. Each row's positive is the other view of its sample; its negatives are the other
2N - 2 rows, *same-view rows included*. This is eq. 3 of the paper (a denominator over 2N
terms; "the other 2(N - 1) examples are treated as negative examples", section 3.1) and
what the authors' ``models_vicmae.py`` computes (``info_nce_loss``, adapted from
solo-learn's ``simclr_loss_func``): ``exp(sim / temperature)`` with temperature 0.1,
the mean of ``-log(pos / (pos + neg))`` over the 2N rows, negatives from every GPU
through an all-gather that passes gradients back.

``"ntxent_local_ids"``: the authors' code exactly, including how it labels samples across
GPUs. It names each sample by its index *within its GPU's batch* (``arange(B).repeat(2)``,
gathered from all ranks, where solo-learn gathers dataset indexes), so with W > 1 processes
the rows at the same local index on the other ranks (2(W - 1) rows of unrelated samples)
count as extra positives in the numerator and leave the negatives. With one process it
equals ``"ntxent"``.

``"cross_view"`` (:func:`cross_view_info_nce`): Algorithm 1's ``ctr(p_i, z_j) +
ctr(z_j, p_i)``: an N x N matrix between the two views, positives on its diagonal, no
same-view negatives, the cross-entropies of both directions summed: at initialisation
2 log N against NT-Xent's log(2N - 1), about 1.85x at N = 4096, which lambda then scales.
Two details of Algorithm 1 are read against the paper's own eq. 3 rather than literally:
``sim * exp(tau)`` (CLIP's learned log-scale notation; with tau = 0.1 it would scale
logits by 1.105, almost no temperature) is ``sim / tau``, and ``ctr``'s ``return 2 *
loss`` (a MoCo v3 leftover, absent from eq. 3) is dropped, which only rescales lambda.

Every form computes its logits in float32 with autocast switched off: inside a bf16 or
fp16 autocast region the matmul would otherwise be cast back down, and ``sim / 0.1`` in
bf16 keeps only ~3 significant digits of the differences the loss is made of.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy, normalize

from vicmae.distributed import gather_with_grad, get_rank, get_world_size

ContrastiveForm = Literal["ntxent", "ntxent_local_ids", "cross_view"]
CONTRASTIVE_FORMS: tuple[str, ...] = ("ntxent", "ntxent_local_ids", "cross_view")


def _float32(device: torch.device) -> torch.autocast:
    """A region where autocast is off, so float32 inputs give float32 matmuls."""
    return torch.autocast(device_type=device.type, enabled=False)


def _gather(x: Tensor, gather: bool) -> tuple[Tensor, int]:
    """(every rank's rows concatenated in rank order, this rank's index) or (x, 0)."""
    if gather and get_world_size() > 1:
        return gather_with_grad(x), get_rank()
    return x, 0


def nt_xent(
    p: Tensor,
    z: Tensor,
    temperature: float = 0.1,
    gather: bool = True,
    local_ids: bool = False,
) -> Tensor:
    """SimCLR's NT-Xent over the 2N rows ``[p; z]`` (paper eq. 3; the authors' loss).

    Args:
        p: (n, d) projections of view i on this rank (l2-normalised here; any scale in).
        z: (n, d) projections of view j; row k is the positive of p's row k.
        temperature: tau in eq. 3 (authors' code: 0.1).
        gather: take negatives from every rank's rows (all-gather with gradients) when
            torch.distributed is initialised; a no-op with one process.
        local_ids: label samples by their index within this rank's batch, as the authors'
            code does; across ranks, rows at the same local index then also count as
            positives (see the module docstring). False: each sample is its own identity.

    Returns:
        Scalar: the mean over this rank's 2n rows of ``-log(sum_pos / sum_all_but_self)``
        of ``exp(cos / tau)``. With ``local_ids=False``, averaged over ranks (as DDP
        averages gradients) it equals the loss of one process holding the whole batch.
    """
    n = p.shape[0]
    with _float32(p.device):
        x = normalize(torch.cat([p, z]).float(), dim=1)  # (2n, d): rows [view i; view j]
        x_all, rank = _gather(x, gather)  # (W*2n, d): rank r's rows at [2n*r, 2n*(r+1))
        logits = x @ x_all.T / temperature  # (2n, W*2n) float32
        cols = torch.arange(x_all.shape[0], device=x.device)  # (W*2n,)
        rows = torch.arange(2 * n, device=x.device)  # (2n,)
        # A sample's identity: its index in its rank's batch, plus n x its rank unless the
        # authors' local labelling is asked for.
        id_cols = cols % (2 * n) % n + (0 if local_ids else cols // (2 * n) * n)  # (W*2n,)
        id_rows = rows % n + (0 if local_ids else rank * n)  # (2n,)
        is_self = (rows + 2 * n * rank)[:, None] == cols[None, :]  # (2n, W*2n)
        is_pos = (id_rows[:, None] == id_cols[None, :]) & ~is_self
        others = logits.masked_fill(is_self, float("-inf"))  # the denominator: all but self
        pos = logits.masked_fill(~is_pos, float("-inf"))
        return (torch.logsumexp(others, dim=1) - torch.logsumexp(pos, dim=1)).mean()


def cross_view_info_nce(
    p: Tensor, z: Tensor, temperature: float = 0.1, gather: bool = True
) -> Tensor:
    """Algorithm 1's symmetrised cross-view InfoNCE ``ctr(p, z) + ctr(z, p)``.

    Args:
        p: (n, d) projections of view i on this rank (l2-normalised here; any scale in).
        z: (n, d) projections of view j, row k the positive of p's row k.
        temperature: tau (logits are ``cos / tau``, as eq. 3).
        gather: take the other view's keys from every rank (all-gather with gradients)
            when torch.distributed is initialised; a no-op with one process.

    Returns:
        Scalar: the sum of the two directions' cross-entropies, each the mean over this
        rank's rows. Averaged over ranks it equals one process holding the whole batch.
    """
    n = p.shape[0]
    with _float32(p.device):
        p = normalize(p.float(), dim=1)
        z = normalize(z.float(), dim=1)
        pz_all, rank = _gather(torch.cat([p, z], dim=1), gather)  # (W*n, 2d): one collective
        p_all, z_all = pz_all.split(p.shape[1], dim=1)
        labels = torch.arange(n, device=p.device) + rank * n  # (n,) the positives' columns
        logits_pz = p @ z_all.T / temperature  # (n, W*n) float32
        logits_zp = z @ p_all.T / temperature
        return cross_entropy(logits_pz, labels) + cross_entropy(logits_zp, labels)


def contrastive_loss(
    form: str, p: Tensor, z: Tensor, temperature: float = 0.1, gather: bool = True
) -> Tensor:
    """The contrastive term of ``form`` (one of ``CONTRASTIVE_FORMS``) for pairs (p[k], z[k])."""
    if form == "ntxent":
        return nt_xent(p, z, temperature, gather)
    if form == "ntxent_local_ids":
        return nt_xent(p, z, temperature, gather, local_ids=True)
    if form == "cross_view":
        return cross_view_info_nce(p, z, temperature, gather)
    raise ValueError(f"contrastive form must be one of {CONTRASTIVE_FORMS}, got {form!r}")


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
