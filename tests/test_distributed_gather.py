"""Two real processes (gloo): every contrastive form with gathered negatives, against references.

"ntxent" and "cross_view" averaged over the ranks equal one process holding the whole batch
(loss and gradients); "ntxent_local_ids" equals a loop written from the authors' code, in
which rows at the same local index on the other rank count as positives.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.functional import normalize

from vicmae.distributed import gather_with_grad, get_rank, get_world_size
from vicmae.model.losses import contrastive_loss, cross_view_info_nce, nt_xent

WORLD = 2
N_LOCAL, DIM, TAU = 3, 8, 0.2
FORMS = ("ntxent", "ntxent_local_ids", "cross_view")


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(WORLD * N_LOCAL, DIM, generator=g)
    z = torch.randn(WORLD * N_LOCAL, DIM, generator=g)
    return p, z


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    """One rank: its slice of the global batch, each form gathered or not, grads to a file."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        p_all, z_all = _global_batch()
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        results: dict = {"rank": get_rank(), "world": get_world_size()}
        for form in FORMS:
            for gather in (True, False, None):  # None: the default (gathered)
                p = p_all[rows].clone().requires_grad_(True)
                z = z_all[rows].clone().requires_grad_(True)
                kwargs = {} if gather is None else {"gather": gather}
                loss = contrastive_loss(form, p, z, TAU, **kwargs)
                loss.backward()
                results[form, gather] = (loss.detach(), p.grad, z.grad)
        p, z = p_all[rows], z_all[rows]
        results["defaults"] = (nt_xent(p, z, TAU), cross_view_info_nce(p, z, TAU))
        x = torch.full((2, 2), float(rank), requires_grad=True)
        results["gathered"] = gather_with_grad(x).detach()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _authors_rank_loss(rank: int) -> float:
    """The authors' ``info_nce_loss`` on ``rank``, written out with loops (float64).

    Local rows ``[u1; u2]`` of the rank against every rank's rows; a column is a positive
    when its index within its rank's batch equals the row's (the labels are
    ``arange(B).repeat(2)`` on every rank), itself excluded; every other column a negative.
    """
    p_all, z_all = _global_batch()
    ranks = []
    for r in range(WORLD):
        rows = slice(r * N_LOCAL, (r + 1) * N_LOCAL)
        ranks.append(normalize(torch.cat([p_all[rows], z_all[rows]]).double(), dim=1))
    local, everything = ranks[rank], torch.cat(ranks)  # (2n, d), (W*2n, d)
    total = 0.0
    for i in range(2 * N_LOCAL):
        pos = neg = 0.0
        for c in range(everything.shape[0]):
            if c == rank * 2 * N_LOCAL + i:
                continue  # its own row
            e = math.exp(float(local[i] @ everything[c]) / TAU)
            if c % (2 * N_LOCAL) % N_LOCAL == i % N_LOCAL:
                pos += e
            else:
                neg += e
        total += -math.log(pos / (pos + neg))
    return total / (2 * N_LOCAL)


@pytest.mark.slow
def test_gathered_contrastive_forms_equal_their_references(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["world"] == WORLD
    expected = torch.cat([torch.zeros(2, 2), torch.ones(2, 2)])
    assert all(torch.equal(r["gathered"], expected) for r in ranks)

    p_all, z_all = _global_batch()
    for form in ("ntxent", "cross_view"):
        p = p_all.clone().requires_grad_(True)
        z = z_all.clone().requires_grad_(True)
        loss = contrastive_loss(form, p, z, TAU)  # one process, whole batch
        loss.backward()
        # DDP averages over ranks: the mean of the rank losses is the global loss, and
        # each rank's gradient / WORLD is the global gradient of its rows.
        mean_loss = sum(r[form, True][0] for r in ranks) / WORLD
        torch.testing.assert_close(mean_loss, loss.detach())
        grad_p = torch.cat([r[form, True][1] for r in ranks]) / WORLD
        grad_z = torch.cat([r[form, True][2] for r in ranks]) / WORLD
        torch.testing.assert_close(grad_p, p.grad)
        torch.testing.assert_close(grad_z, z.grad)
        # Without gathering, negatives are local only: a different loss (the test can tell).
        local_mean = sum(r[form, False][0] for r in ranks) / WORLD
        assert not torch.allclose(local_mean, loss.detach())

    # The authors' labelling: each rank's loss is their formula, and it is not NT-Xent's.
    for rank, r in enumerate(ranks):
        got = r["ntxent_local_ids", True][0].item()
        assert abs(got - _authors_rank_loss(rank)) < 1e-5
        assert abs(got - r["ntxent", True][0].item()) > 1e-3
        # its gradients reach both views' rows and are finite
        assert all(
            torch.isfinite(g).all() and g.abs().sum() > 0 for g in r["ntxent_local_ids", True][1:]
        )
    # Called without `gather`, every form (and both functions) gathers: DDP's default.
    for r in ranks:
        for form in FORMS:
            torch.testing.assert_close(r[form, None][0], r[form, True][0], rtol=0, atol=0)
        torch.testing.assert_close(r["defaults"][0], r["ntxent", True][0], rtol=0, atol=0)
        torch.testing.assert_close(r["defaults"][1], r["cross_view", True][0], rtol=0, atol=0)
    # without gathering there are no other ranks' rows: identical to NT-Xent
    for r in ranks:
        torch.testing.assert_close(r["ntxent_local_ids", False][0], r["ntxent", False][0])
