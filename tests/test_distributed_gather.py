"""Two real processes (gloo): InfoNCE with gathered negatives equals one process, whole batch."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vicmae.distributed import gather_with_grad, get_rank, get_world_size
from vicmae.losses import info_nce

WORLD = 2
N_LOCAL, DIM, TAU = 3, 8, 0.2


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(WORLD * N_LOCAL, DIM, generator=g)
    z = torch.randn(WORLD * N_LOCAL, DIM, generator=g)
    return p, z


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    """One rank: its slice of the global batch, gathered InfoNCE, gradients to a file."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        p_all, z_all = _global_batch()
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        results = {"rank": get_rank(), "world": get_world_size()}
        for gather in (True, False):
            p = p_all[rows].clone().requires_grad_(True)
            z = z_all[rows].clone().requires_grad_(True)
            loss = info_nce(p, z, TAU, gather=gather)
            loss.backward()
            results[gather] = (loss.detach(), p.grad, z.grad)
        x = torch.full((2, 2), float(rank), requires_grad=True)
        results["gathered"] = gather_with_grad(x).detach()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gathered_info_nce_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["world"] == WORLD
    expected = torch.cat([torch.zeros(2, 2), torch.ones(2, 2)])
    assert all(torch.equal(r["gathered"], expected) for r in ranks)

    p_all, z_all = _global_batch()
    p = p_all.clone().requires_grad_(True)
    z = z_all.clone().requires_grad_(True)
    loss = info_nce(p, z, TAU)  # one process, whole batch
    loss.backward()

    # DDP averages over ranks: the mean of the rank losses is the global loss, and each
    # rank's gradient / WORLD is the global gradient of its rows.
    mean_loss = sum(r[True][0] for r in ranks) / WORLD
    torch.testing.assert_close(mean_loss, loss.detach())
    grad_p = torch.cat([r[True][1] for r in ranks]) / WORLD
    grad_z = torch.cat([r[True][2] for r in ranks]) / WORLD
    torch.testing.assert_close(grad_p, p.grad)
    torch.testing.assert_close(grad_z, z.grad)

    # Without gathering, negatives are local only: a different loss (the test can tell).
    local_mean = sum(r[False][0] for r in ranks) / WORLD
    assert not torch.allclose(local_mean, loss.detach())
