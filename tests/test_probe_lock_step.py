"""The micro-batch memory probe cannot hang a multi-GPU job (issue 19, item 7).

Two real processes (gloo, CPU) probe the real pretraining step of a tiny ViC-MAE, with its
contrastive all-gather, while rank 1 runs out of memory (``torch.OutOfMemoryError`` raised
inside its forward, as CUDA raises it) for every size above 4 that rank 0 accepts. Before,
each rank searched on its own: rank 0 went on to larger sizes and waited in the all-gather
of a forward that rank 1 never ran. Now both must agree on 4 and finish.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from media import TINY_MODEL

from vicmae.config import load_config
from vicmae.distributed import DistInfo
from vicmae.engine.batching import largest_that_fits, probe_step
from vicmae.engine.setup import Run
from vicmae.jobs.pretrain import PretrainLoss
from vicmae.model.vicmae import ViCMAE

WORLD = 2
FITS_ON_RANK_1 = 4
TINY = [*TINY_MODEL, "data.resolution=32", "optim.batch_size=32", "run.progress=false"]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    # A short timeout: a collective that one rank never reaches fails the test, not the suite.
    timeout = datetime.timedelta(seconds=60)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timeout
    )
    try:
        torch.set_num_threads(1)
        results = [_probe(rank, out_dir, fail_with) for fail_with in ("oom", "bug")]
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def _probe(rank: int, out_dir: str, fail_with: str) -> dict:
    """The search on this rank, rank 1 failing above 4 with ``fail_with``."""
    torch.manual_seed(0)
    cfg = load_config(None, TINY)
    info = DistInfo(rank=rank, world_size=WORLD)
    run = Run("pretrain", cfg, info, Path(out_dir), None, None, "fp32")
    model = ViCMAE(cfg.model)
    probe = probe_step(run, model, PretrainLoss(cfg, np.zeros(1), info.device), 2, 32)
    sizes: list[int] = []

    def fail_big(module, args) -> None:  # inside the forward, as CUDA raises it
        sizes.append(args[0].shape[0])
        if rank == 1 and args[0].shape[0] > 2 * FITS_ON_RANK_1:  # 2 views per sample
            if fail_with == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory (simulated on rank 1)")
            raise ValueError("a bug on rank 1")

    model.encoder.blocks.register_forward_pre_hook(fail_big)  # (2m, 1+K, D): 2 views
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result: dict = {"rank": rank}
    try:
        result["micro"] = largest_that_fits(model, probe, 16, info)
    except (RuntimeError, ValueError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["probed"] = sorted({n // 2 for n in sizes})
    result["unchanged"] = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return result


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_rank_failing_both_agree_and_finish(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(r, str(tmp_path / "init"), str(tmp_path)))
        for r in range(WORLD)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    alive = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not alive, f"ranks {alive} still running: the probe hung"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    (r0, bug0), (r1, bug1) = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # Rank 1 out of memory above 4: both agree on 4.
    assert r0["micro"] == r1["micro"] == FITS_ON_RANK_1, (r0, r1)
    # Lock step: both probed the same sizes (rank 0 did not go on alone to 16).
    assert r0["probed"] == r1["probed"] and max(r0["probed"]) == 8
    assert r0["unchanged"] and r1["unchanged"]  # probing left the weights as they were
    # Any other error on one rank stops both, each with a reason.
    assert bug1["error"] == "ValueError: a bug on rank 1"
    assert bug0["error"].startswith("RuntimeError: the memory probe failed on another rank")
