"""InfoNCE, reconstruction loss and the lambda schedule against hand-written references."""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import cross_entropy, normalize

from vicmae.losses import info_nce, lambda_schedule, reconstruction_loss


def _reference_info_nce(p: torch.Tensor, z: torch.Tensor, tau: float) -> torch.Tensor:
    p, z = normalize(p, dim=1), normalize(z, dim=1)
    sim = p @ z.T  # (N, N): sim[i, k] = p_i . z_k, positives on the diagonal
    labels = torch.arange(p.shape[0])
    return cross_entropy(sim / tau, labels) + cross_entropy(sim.T / tau, labels)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_info_nce_equals_reference(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    torch.testing.assert_close(info_nce(p, z, tau), _reference_info_nce(p, z, tau))
    # written out per element for row 0 of ctr(p, z), eq. 3 with the diagonal positive
    pn, zn = normalize(p, dim=1), normalize(z, dim=1)
    row0 = -torch.log(torch.exp(pn[0] @ zn[0] / tau) / torch.exp(pn[0] @ zn.T / tau).sum())
    ctr_pz = cross_entropy(pn @ zn.T / tau, torch.arange(6), reduction="none")
    torch.testing.assert_close(ctr_pz[0], row0)


def test_info_nce_lower_for_matched_than_shuffled_pairs() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(16, 32, generator=g)
    p = base + 0.1 * torch.randn(16, 32, generator=g)
    z = base + 0.1 * torch.randn(16, 32, generator=g)
    shuffled = z[torch.randperm(16, generator=g)]
    assert info_nce(p, z, 0.1) < info_nce(p, shuffled, 0.1) - 1.0


def test_info_nce_is_scale_invariant_and_symmetric() -> None:
    g = torch.Generator().manual_seed(2)
    p, z = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    torch.testing.assert_close(info_nce(3.0 * p, 0.5 * z), info_nce(p, z))
    torch.testing.assert_close(info_nce(z, p), info_nce(p, z))


def test_info_nce_bf16_inputs_give_float32_loss() -> None:
    p, z = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    loss = info_nce(p, z)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


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


def test_lambda_schedule_paper_step_and_ramp() -> None:
    assert lambda_schedule(0.0) == 0.0
    assert lambda_schedule(199.99) == 0.0
    assert lambda_schedule(200.0) == 0.025
    assert lambda_schedule(799.0) == 0.025
    assert lambda_schedule(5.0, start_epoch=2, weight=0.1, ramp_epochs=6) == pytest.approx(0.05)
    assert lambda_schedule(9.0, start_epoch=2, weight=0.1, ramp_epochs=6) == 0.1
