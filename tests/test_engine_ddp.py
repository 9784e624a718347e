"""Two ranks under torchrun (gloo, CPU): each job stopped, resumed, equal to an uninterrupted run.

One torchrun launch per job runs it three times in the same processes
(``tests/ddp_resume_job.py``): all steps, the first few, then ``resume`` to the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from media import make_tiny_beton, tiny_pretrain_checkpoint

from vicmae.engine.checkpoint import load_checkpoint

JOB = Path(__file__).with_name("ddp_resume_job.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ddp")
    beton = make_tiny_beton(root / "tiny.beton")
    ckpt = tiny_pretrain_checkpoint(root / "pretrained" / "last.pt")
    return beton, ckpt


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pretrain", "linprobe", "finetune"])
def test_two_ranks_stopped_and_resumed_equal_uninterrupted(kind, data, tmp_path):
    beton, pretrained = data
    # 32 samples, batch 8 over 2 ranks (4 each): 4 steps per epoch, 8 in all; stop at 3.
    proc = _torchrun(str(JOB), kind, str(beton), str(pretrained), str(tmp_path), "3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    full, part = tmp_path / "full", tmp_path / "part"
    # The stopped run validated where it stopped (epoch 0.75): a row of its own history.
    a, b = _rows(full), [r for r in _rows(part) if not ("val_top1" in r and r["epoch"] % 1)]
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert max(r["step"] for r in a) == 8
    for ra, rb in zip(a, b, strict=True):
        for key in ra:
            if key not in ("time", "samples_per_s", "data_wait_pct"):
                assert ra[key] == rb[key], (kind, ra["step"], key)
    sa, sb = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    assert len(sa["rng"]) == 2  # each rank's RNG saved
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    if kind != "pretrain":
        ra, rb = (json.loads((d / "result.json").read_text()) for d in (full, part))
        assert ra["val_top1"] == rb["val_top1"] and ra["val_samples"] == 32  # each sample once
        assert (full / "best.pt").is_file() and "val_top5" not in ra  # 2 classes: no top-5


def _two_nodes(*args: str) -> list[tuple[int, str]]:
    """``tests/ddp_resume_job.py ARGS`` as 2 nodes x 1 process: two torchrun launches that
    meet through the c10d rendezvous on 127.0.0.1, as two machines of a cluster would."""
    endpoint = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    procs = []
    for node in (0, 1):
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
            "--node_rank", str(node), "--nproc_per_node", "1", "--rdzv_backend", "c10d",
            "--rdzv_endpoint", endpoint, "--rdzv_id", "two-nodes", "--local_addr", "127.0.0.1",
            str(JOB), *args,
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        )
    out = []
    try:
        for p in procs:
            text, _ = p.communicate(timeout=900)
            out.append((p.returncode, text.decode(errors="replace")))
    finally:
        for p in procs:
            p.kill()
    return out


@pytest.mark.slow
def test_two_nodes_stopped_and_resumed_equal_uninterrupted(data, tmp_path):
    """A pretraining job on 2 nodes x 1 process (torchrun's c10d rendezvous): the
    uninterrupted run and a run stopped at step 3, then a new launch of both nodes that
    resumes it; the two end equal, loss for loss and weight for weight."""
    beton, pretrained = data
    args = ["pretrain", str(beton), str(pretrained), str(tmp_path), "3"]
    for phase in ("first", "resume"):
        for code, text in _two_nodes(*args, phase):
            assert code == 0, text[-4000:]
    full, part = tmp_path / "full", tmp_path / "part"
    a, b = _rows(full), _rows(part)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "loss_recon", "loss_contrastive", "lr", "lambda"):
            assert ra[key] == rb[key], (ra["step"], key)
    sa, sb = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    assert len(sa["rng"]) == len(sb["rng"]) == 2  # both nodes' RNG saved
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
