"""Contrastive forms, reconstruction loss and the lambda schedule against direct references."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.functional import cross_entropy, normalize

from vicmae.model.losses import (
    contrastive_loss,
    cross_view_info_nce,
    nt_xent,
    reconstruction_loss,
)

FORMS = ("ntxent", "ntxent_local_ids", "cross_view")


def reference_nt_xent(p: torch.Tensor, z: torch.Tensor, tau: float) -> float:
    """Eq. 3 over the 2N rows [p; z], written out with plain loops (float64)."""
    x = normalize(torch.cat([p, z]).double(), dim=1)
    n2 = x.shape[0]
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2  # the other view of the same sample
        num = math.exp(float(x[i] @ x[pos]) / tau)
        den = sum(math.exp(float(x[i] @ x[k]) / tau) for k in range(n2) if k != i)
        total += -math.log(num / den)
    return total / n2


def reference_cross_view(p: torch.Tensor, z: torch.Tensor, tau: float) -> float:
    """Algorithm 1's ctr(p, z) + ctr(z, p) (logits cos / tau), with plain loops (float64)."""
    p, z = normalize(p.double(), dim=1), normalize(z.double(), dim=1)
    n = p.shape[0]

    def ctr(a: torch.Tensor, b: torch.Tensor) -> float:
        rows = []
        for i in range(n):
            den = sum(math.exp(float(a[i] @ b[k]) / tau) for k in range(n))
            rows.append(-math.log(math.exp(float(a[i] @ b[i]) / tau) / den))
        return sum(rows) / n

    return ctr(p, z) + ctr(z, p)


def _pz(n: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_equals_the_loop_reference(tau: float) -> None:
    p, z = _pz()
    assert nt_xent(p, z, tau).item() == pytest.approx(reference_nt_xent(p, z, tau), rel=1e-5)
    # one process: the authors' local labelling is the same loss
    assert nt_xent(p, z, tau, local_ids=True).item() == pytest.approx(
        reference_nt_xent(p, z, tau), rel=1e-5
    )


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_cross_view_equals_the_loop_reference(tau: float) -> None:
    p, z = _pz(seed=1)
    ref = reference_cross_view(p, z, tau)
    assert cross_view_info_nce(p, z, tau).item() == pytest.approx(ref, rel=1e-5)
    # and as cross-entropy over the N x N matrix, positives on the diagonal
    pn, zn = normalize(p, dim=1), normalize(z, dim=1)
    labels = torch.arange(6)
    ce = cross_entropy(pn @ zn.T / tau, labels) + cross_entropy(zn @ pn.T / tau, labels)
    torch.testing.assert_close(cross_view_info_nce(p, z, tau), ce)


def test_the_two_forms_differ_and_dispatch_by_name() -> None:
    p, z = _pz(n=16, seed=2)
    ntx, cross = contrastive_loss("ntxent", p, z), contrastive_loss("cross_view", p, z)
    torch.testing.assert_close(ntx, nt_xent(p, z))
    torch.testing.assert_close(cross, cross_view_info_nce(p, z))
    # the cross-view form sums two directions without same-view negatives: not NT-Xent
    assert cross.item() > 1.5 * ntx.item()
    with pytest.raises(ValueError, match="contrastive form"):
        contrastive_loss("simsiam", p, z)


@pytest.mark.parametrize("form", FORMS)
def test_matched_pairs_score_lower_than_shuffled(form: str) -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(16, 32, generator=g)
    p = base + 0.1 * torch.randn(16, 32, generator=g)
    z = base + 0.1 * torch.randn(16, 32, generator=g)
    shuffled = z[torch.randperm(16, generator=g)]
    assert contrastive_loss(form, p, z) < contrastive_loss(form, p, shuffled) - 1.0


@pytest.mark.parametrize("form", FORMS)
def test_scale_invariant_and_symmetric(form: str) -> None:
    p, z = _pz(n=5, d=4, seed=2)
    torch.testing.assert_close(
        contrastive_loss(form, 3.0 * p, 0.5 * z), contrastive_loss(form, p, z)
    )
    torch.testing.assert_close(contrastive_loss(form, z, p), contrastive_loss(form, p, z))


@pytest.mark.parametrize("form", FORMS)
def test_float32_logits_under_bf16_autocast(form: str) -> None:
    """The matmul must not re-enter autocast: bf16 logits would miss this by ~1e-2."""
    p, z = _pz(n=32, d=128, seed=3)
    p.requires_grad_(True)
    ref = contrastive_loss(form, p, z, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = contrastive_loss(form, p, z, 0.1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    (grad_ref,) = torch.autograd.grad(ref, p)
    (grad_got,) = torch.autograd.grad(got, p)  # backward outside autocast, as a trainer does
    torch.testing.assert_close(grad_got, grad_ref, rtol=0, atol=1e-5)
    # bf16 inputs (a projector's output under autocast) still give a float32 loss
    assert contrastive_loss(form, p.detach().bfloat16(), z.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("norm_pix", [False, True])
def test_reconstruction_loss_reference(norm_pix: bool) -> None:
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(2, 6, 12, generator=g), torch.randn(2, 6, 12, generator=g)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 0, 1, 1, 1]], dtype=torch.float32)
    t = target
    if norm_pix:
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = ((pred - t) ** 2).mean(-1)  # (2, 6)
    ref = per_patch[mask.bool()].mean()
    torch.testing.assert_close(reconstruction_loss(pred, target, mask, norm_pix), ref)
