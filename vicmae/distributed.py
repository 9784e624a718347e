"""Small torch.distributed helpers: rank, world size, all-gather that passes gradients back."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


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


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (n, ...) from all ranks in rank order -> (world*n, ...), differentiably.

    Every rank must pass the same ``n`` (use ``drop_last`` in the loader). Returns ``x``
    itself when not distributed.
    """
    if get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)
