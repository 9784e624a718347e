"""torch.distributed for the jobs: joining the group under torchrun, and small collectives.

``setup_distributed`` joins the process group when the job was launched by ``torchrun``
(``WORLD_SIZE`` set: NCCL on CUDA, gloo on CPU) and otherwise describes one process;
``gather_with_grad`` is the all-gather that passes gradients back (contrastive negatives);
``gathers_stand_in`` makes it local for a while (a memory probe that each rank runs alone).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_device(device: str) -> None:
    """Refuse (ValueError, one line) a device this machine does not have, before any work."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"run.device={device} but no CUDA GPU is usable here "
                "(torch.cuda.is_available() is False); use run.device=cpu or auto"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"run.device={device} but only {torch.cuda.device_count()} GPU(s) are visible"
            )


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` set), else one process.

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; under
    torchrun each process takes GPU ``LOCAL_RANK``.
    """
    check_device(device)
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        index = int(device.split(":")[1]) if ":" in device and world == 1 else local
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def teardown_distributed() -> None:
    """Leave the process group (at the end of a job), so the process exits cleanly."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def is_distributed() -> bool:
    """True when a process group is initialised (under torchrun or a test's spawn)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sends each rank the gradient of its own rows.

    Every rank's loss uses every rank's rows, so the gradient of a rank's rows is the
    *sum* of the gradients all ranks computed for them: all-reduce, then take our slice.
    (``dist.all_gather`` alone returns tensors detached from the graph.)
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # x: (n, ...) -> (world*n, ...)
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # grad: (world*n, ...) -> (n, ...)
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


# Set inside gathers_stand_in(): gather_with_grad copies instead of communicating.
_STAND_IN: ContextVar[bool] = ContextVar("vicmae_gathers_stand_in", default=False)


@contextlib.contextmanager
def gathers_stand_in() -> Iterator[None]:
    """Within the block, :func:`gather_with_grad` returns ``world`` copies of this rank's
    rows: the same shapes and memory as the real all-gather, and no communication.

    For work that each rank does on its own (the micro-batch memory probe): a collective
    there waits for ranks that may never reach it (one ran out of memory) for ever.
    """
    token = _STAND_IN.set(True)
    try:
        yield
    finally:
        _STAND_IN.reset(token)


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (n, ...) from all ranks in rank order -> (world*n, ...), differentiably.

    Every rank must pass the same ``n`` (use ``drop_last`` in the loader). Returns ``x``
    itself when not distributed (and copies of it inside :func:`gathers_stand_in`).
    """
    world = get_world_size()
    if world == 1:
        return x
    if _STAND_IN.get():
        return torch.cat([x] * world, dim=0)  # (world*n, ...), no collective
    return _GatherWithGrad.apply(x)
