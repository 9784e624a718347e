"""How many samples per forward: the batch arithmetic and the GPU memory probe.

A job's global batch (``optim.batch_size``) is ``micro_batch`` samples per device per
forward x ``accum`` forwards per optimiser step x the number of processes:

- :func:`accumulation` splits the per-device batch (``optim.micro_batch`` or
  ``optim.accum`` decide when set; otherwise the largest divisor within a limit);
- :func:`choose_micro_batch` finds that limit: the resumed run's micro-batch (the same
  numerics), else on CUDA the largest divisor whose forward and backward
  (:func:`probe_step`) plus optimiser state fits in GPU memory; on a CPU at most
  :data:`CPU_MICRO_BATCH_LIMIT`. A micro-batch chosen so, smaller than the per-device
  batch, is logged as a warning naming both numbers: what a forward computes over its
  batch (the contrastive negatives, BatchNorm statistics) then covers the micro-batch.
- A micro-batch the config sets (the ``paper`` recipe's 512 per device, section 4) is
  never split behind the user's back: on CUDA one probe at that size runs first, and
  :func:`require_fits` refuses it in one line, naming the memory, when it does not fit.

The probe cannot hang a multi-GPU job (:func:`largest_that_fits`): each rank runs its
forward and backward with no collective inside (the contrastive all-gather copies this
rank's rows, SyncBatchNorm uses its running statistics: the same shapes, no
communication), and the binary search goes in lock step: after every probe the ranks
agree (one all-reduce that every rank reaches, out of memory or not) whether that size
fits on all of them, so all take the same next step and end on the same answer.

Example::

    micro, accum = accumulation(OptimConfig(batch_size=4096, micro_batch=64), world_size=8)
    # (64, 8): 64 per forward x 8 forwards x 8 processes
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from vicmae.config.io import ConfigError
from vicmae.config.sections import OptimConfig
from vicmae.distributed import DistInfo, gathers_stand_in
from vicmae.engine.checkpoint import rng_state, set_rng_state

if TYPE_CHECKING:
    from vicmae.engine.setup import Run

log = logging.getLogger("vicmae")

# On a CPU no memory probe is run: at most this many samples per forward.
CPU_MICRO_BATCH_LIMIT = 32
# Share of GPU memory the probed step (plus optimiser state) may use.
GPU_MEMORY_SHARE = 0.85


def accumulation(
    optim: OptimConfig, world_size: int, fits: int | None = None, multiple_of: int = 1
) -> tuple[int, int]:
    """(micro batch per device, accumulation steps) whose product is the per-device batch.

    ``optim.micro_batch`` or ``optim.accum`` decide when set; otherwise the largest divisor
    of the per-device batch that is at most ``fits`` (no limit when None), a multiple of
    ``multiple_of`` where one exists (mixup needs pairs).
    """
    per_device, rest = divmod(optim.batch_size, world_size)
    if rest:
        raise ConfigError(
            f"optim.batch_size={optim.batch_size} is not divisible by the {world_size} "
            f"processes; use a multiple of {world_size}"
        )
    micro = optim.micro_batch
    if micro is None and optim.accum is not None:
        if per_device % optim.accum:
            raise ConfigError(
                f"optim.accum={optim.accum} does not divide the per-device batch {per_device} "
                f"(optim.batch_size={optim.batch_size} over {world_size} process(es))"
            )
        micro = per_device // optim.accum
    if micro is None:
        limit = per_device if fits is None else max(1, min(fits, per_device))
        divisors = [d for d in range(1, limit + 1) if per_device % d == 0]
        micro = max([d for d in divisors if d % multiple_of == 0] or divisors)
    steps, rest = divmod(per_device, micro)
    if rest or steps == 0:
        raise ConfigError(
            f"optim.batch_size={optim.batch_size} over {world_size} process(es) is {per_device} "
            f"per device, not a multiple of optim.micro_batch={micro}; set optim.micro_batch "
            "to a divisor of it, or null for the engine to choose"
        )
    if optim.accum is not None and optim.accum != steps:
        raise ConfigError(
            f"optim.accum={optim.accum} and optim.micro_batch={micro} disagree: "
            f"{per_device} per device needs accum={steps}"
        )
    return micro, steps


def choose_micro_batch(
    optim: OptimConfig,
    info: DistInfo,
    saved: int | None,
    model: nn.Module,
    probe: Callable[[int], None] | None,
    state_bytes_per_param: int,
    multiple_of: int = 1,
) -> tuple[int, int]:
    """(micro batch per device, accumulation steps) for ``optim`` on this device.

    Set by ``optim.micro_batch``/``optim.accum`` (on CUDA checked by one probe at that size:
    :func:`require_fits`), else kept from the resumed run (``saved``, its micro-batch), else
    the largest divisor of the per-device batch whose forward+backward (``probe(m)``) plus
    optimiser state fits in GPU memory, agreed across ranks; on a CPU at most
    :data:`CPU_MICRO_BATCH_LIMIT`. A chosen micro-batch smaller than the per-device batch
    is logged as a warning (:func:`warn_split`).
    """
    fits, why = None, ""
    chosen = optim.micro_batch is None and optim.accum is None
    cuda = info.device.type == "cuda"
    if chosen:
        per_device = optim.batch_size // info.world_size
        if saved is not None and per_device % int(saved) == 0:
            fits, why = int(saved), "the resumed run's"  # its layout: the same numerics
        elif cuda and probe is not None:
            memory = GpuMemory(model, state_bytes_per_param)
            fits = largest_that_fits(model, probe, per_device, info, memory, multiple_of)
            why = "the largest that fits in GPU memory"
        elif not cuda:
            fits, why = CPU_MICRO_BATCH_LIMIT, f"at most {CPU_MICRO_BATCH_LIMIT} on a CPU"
    micro, accum = accumulation(optim, info.world_size, fits, multiple_of)
    if chosen and info.is_main:
        warn_split(micro, accum, why)
    elif not chosen and cuda and probe is not None:
        key = "optim.micro_batch" if optim.micro_batch is not None else "optim.accum"
        memory = GpuMemory(model, state_bytes_per_param)
        require_fits(model, probe, micro, micro * accum, info, memory, key)
    return micro, accum


def warn_split(micro: int, accum: int, why: str) -> None:
    """Warn when the engine's own choice splits the per-device batch into forwards: what a
    forward computes over its batch (the contrastive loss's negatives, BatchNorm statistics
    in the projector or the probe) then covers ``micro`` samples, not the per-device batch
    the config asked for."""
    if accum == 1:
        return
    log.warning(
        "micro-batch %d (%s) of the %d per device that optim.batch_size asks: %d forwards "
        "per step, and what each computes over its batch (pretraining's contrastive "
        "negatives, BatchNorm statistics) covers %d samples, not %d; set optim.micro_batch "
        "to choose", micro, why, micro * accum, accum, micro, micro * accum,
    )  # fmt: skip


def require_fits(
    model: nn.Module,
    probe: Callable[[int], None],
    micro: int,
    per_device: int,
    info: DistInfo,
    memory: GpuMemory | None,
    key: str = "optim.micro_batch",
) -> None:
    """Refuse, on every rank and in one line, a set micro-batch whose forward and backward
    (``probe(micro)``) does not fit on some rank, naming the memory and the choices.

    Refused rather than split into smaller forwards: the contrastive negatives and the
    projector's BatchNorm statistics are per forward, so a smaller micro-batch is another
    method, which the user must choose (``optim.micro_batch``), not the engine. Like
    :func:`largest_that_fits`, it leaves no trace in the run (RNG states, buffers).
    """
    with _leaving_no_trace(model):
        ok = _agree(info, probe_alone(model, probe, micro, memory))
    if ok:
        return
    room = "this GPU's memory" if memory is None else memory.describe()
    smaller = next((d for d in range(micro // 2, 0, -1) if per_device % d == 0), None)
    choice = "use GPUs with more memory"
    if smaller is not None:
        choice = (
            f"set optim.micro_batch={smaller} or another divisor of {per_device} (forwards "
            "accumulate to the same optim.batch_size, but each forward's contrastive negatives "
            f"and BatchNorm statistics then cover fewer than {micro} samples), or " + choice
        )
    raise ConfigError(
        f"{key}: {micro} samples per device per forward do not fit in {room}; {choice}"
    )


class GpuMemory:
    """Whether a probed step leaves room: its peak plus what training adds later (optimiser
    state, DDP's gradient buckets) under :data:`GPU_MEMORY_SHARE` of the GPU."""

    def __init__(self, model: nn.Module, state_bytes_per_param: int) -> None:
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        self.total = total
        self.budget = GPU_MEMORY_SHARE * total - params * (state_bytes_per_param // 4 + 1)

    def describe(self) -> str:
        """The budget in words, for an error: ``the 56.1 GiB a step may use of this GPU's
        79.1 GiB (85%, less the optimiser state)``."""
        gib = 2**30
        return (
            f"the {self.budget / gib:.1f} GiB a step may use of this GPU's "
            f"{self.total / gib:.1f} GiB ({GPU_MEMORY_SHARE:.0%}, less the optimiser state)"
        )

    def start(self) -> None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    def fits(self) -> bool:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() < self.budget

    def release(self) -> None:
        torch.cuda.empty_cache()


def largest_that_fits(
    model: nn.Module,
    probe: Callable[[int], None],
    per_device: int,
    info: DistInfo,
    memory: GpuMemory | None = None,
    multiple_of: int = 1,
) -> int:
    """The largest divisor of ``per_device`` whose ``probe`` passes on every rank.

    Binary search in lock step (see the module docstring): each rank runs ``probe(m)``
    alone (:func:`probe_alone`), then all agree. A size passes on a rank when its probe
    raises no ``torch.OutOfMemoryError`` and ``memory`` (None: nothing measured) says it
    fits. Any other error on one rank stops every rank. RNG states and buffers (BatchNorm
    statistics) are put back afterwards, so probing leaves no trace in the run.
    """
    divisors = [d for d in range(1, per_device + 1) if per_device % d == 0]
    cands = [d for d in divisors if d % multiple_of == 0] or divisors

    def fits_everywhere(m: int) -> bool:
        return _agree(info, probe_alone(model, probe, m, memory))

    with _leaving_no_trace(model):
        best = largest_passing(cands, fits_everywhere)
    if info.is_main:
        log.info("micro-batch %d of %d per device fits in memory", best, per_device)
    return best


@contextlib.contextmanager
def _leaving_no_trace(model: nn.Module) -> Iterator[None]:
    """Probing leaves no trace in the run: RNG states and buffers (BatchNorm statistics)
    are put back afterwards."""
    rng, buffers = rng_state(), {k: v.clone() for k, v in model.named_buffers()}
    try:
        yield
    finally:
        set_rng_state(rng)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(buffers[name])


def probe_alone(
    model: nn.Module, probe: Callable[[int], None], m: int, memory: GpuMemory | None
) -> bool | BaseException:
    """Run ``probe(m)`` on this rank with no collective inside: True (fits), False (out of
    memory), or the exception it raised otherwise (for :func:`_agree` to stop every rank)."""
    sync_bns = [mod for mod in model.modules() if isinstance(mod, nn.SyncBatchNorm)]
    training = [mod.training for mod in sync_bns]
    if memory is not None:
        memory.start()
    try:
        for mod in sync_bns:  # running statistics: SyncBatchNorm then communicates nothing
            mod.eval()
        with gathers_stand_in():
            probe(m)
        ok: bool | BaseException = memory.fits() if memory is not None else True
    except torch.OutOfMemoryError:
        ok = False
    except Exception as exc:  # stops every rank (in _agree), not this one alone
        ok = exc
    finally:
        for mod, mode in zip(sync_bns, training, strict=True):
            mod.train(mode)
        model.zero_grad(set_to_none=True)
        if memory is not None:
            memory.release()
    return ok


def _agree(info: DistInfo, here: bool | BaseException) -> bool:
    """Whether the probed size fits on every rank (MIN of every rank's answer; one
    all-reduce that every rank reaches). A rank's error is raised on every rank."""
    code = -1 if isinstance(here, BaseException) else int(here)
    if info.distributed:
        t = torch.tensor([code], device=info.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        code = min(code, int(t.item()))
    if isinstance(here, BaseException):
        raise here
    if code < 0:
        raise RuntimeError("the memory probe failed on another rank (its log says why)")
    return code == 1


def probe_step(
    run: Run, model: nn.Module, loss_fn: Callable, num_views: int, resolution: int
) -> Callable[[int], None]:
    """``probe(m)``: one forward and backward of the job's loss on ``m`` random samples.

    What :func:`choose_micro_batch` measures GPU memory with (never called on a CPU).
    """
    from vicmae.engine.step_info import StepInfo
    from vicmae_data import Batch

    def probe(m: int) -> None:
        views = torch.randint(0, 256, (m, num_views, 3, resolution, resolution), dtype=torch.uint8)
        labels = torch.zeros(m, dtype=torch.long)
        batch = Batch(views.to(run.device), labels.to(run.device),
                      torch.zeros(m, dtype=torch.bool, device=run.device))  # fmt: skip
        with run.autocast():
            loss, _ = loss_fn(model, batch, StepInfo(0, 0, 0, run.info.rank, 0))
        loss.backward()

    return probe


def batch_too_large(
    optim: OptimConfig,
    world_size: int,
    path: str,
    per_rank: list[int],
    weights: list[float],
    what: str | None = None,
) -> ConfigError:
    """The one-line error of a global batch larger than the data, in the trainer's terms.

    ``per_rank``: each file's samples per device (the epoch-defining file first);
    ``weights``: their mixing weights; ``what``: the data's size in words, when not
    ``per_rank``'s first count. Names the flag and key, the global batch, the file's
    share of one device's batch and the largest global batch that fits, e.g.
    ``k400.beton: 24 samples is fewer than one optimiser step's batch: --batch-size
    (optim.batch_size) 4096 is 4096 per device on 1 device; use --batch-size 24 or less``.
    """
    from vicmae_data.load.loader import split_batch

    per_device = optim.batch_size // world_size
    shares = split_batch(per_device, weights)
    k = next((i for i, (s, n) in enumerate(zip(shares, per_rank, strict=True)) if s > n), 0)
    fits = next(
        (
            b
            for b in range(min(per_device, sum(per_rank)), len(weights) - 1, -1)
            if all(s <= n for s, n in zip(split_batch(b, weights), per_rank, strict=True))
        ),
        None,
    )
    on = f" per device ({world_size} devices)" if world_size > 1 else ""
    samples = what or f"{per_rank[k]} samples{on}"
    share = "one optimiser step's batch"
    if len(weights) > 1:
        share = f"its share of one optimiser step's batch ({shares[k]} of {per_device})"
    devices = f"{world_size} device{'s' if world_size > 1 else ''}"
    hint = f"use --batch-size {fits * world_size} or less" if fits else "use fewer devices"
    return ConfigError(
        f"{path}: {samples} is fewer than {share}: --batch-size (optim.batch_size) "
        f"{optim.batch_size} is {per_device} per device on {devices}; {hint}"
    )


def largest_passing(cands: list[int], ok: Callable[[int], bool]) -> int:
    """The largest of the sorted ``cands`` for which ``ok`` holds, by binary search (``ok``
    holds up to some size, then fails); ``cands[0]`` when none passes."""
    best, lo, hi = cands[0], 0, len(cands) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(cands[mid]):
            best, lo = cands[mid], mid + 1
        else:
            hi = mid - 1
    return best
