"""The training engine every job runs: one ``train_step``, one loop (like nanoGPT's, importable).

A job (``vicmae.jobs.pretrain.pretrain``, ``vicmae.jobs.linprobe.linprobe``,
``vicmae.jobs.finetune.finetune``) builds its model, optimiser, loader and loss, puts them
in a :class:`Job`, and calls :func:`fit`, which:

- restores a resumed run exactly (weights, optimiser, scaler, every rank's RNG, and the
  position inside the epoch: the loader's order and crops are a function of seed and
  epoch, so the batches already trained on are skipped, decoded but not used);
- runs ``optim.batch_size`` samples per optimiser step: ``micro_batch`` per device per
  forward, ``accum`` forwards (gradients all-reduced only on the last, ``no_sync``),
  autocast (bf16 on CUDA), the fp16 loss scaler when asked for, clipping when set;
- syncs the host with the device only at logging steps: it sums the loss parts on the
  device, remembers the first non-finite step there, and every ``run.log_every_steps``
  all-reduces them with the ranks' stop requests (SIGTERM/SIGUSR1) and the wall-clock
  checkpoint deadline, so that every rank takes the same decision at the same step;
- validates after every epoch (``Job.evaluate``), keeps ``best.pt`` by ``Job.best``, and
  saves ``last.pt`` (epoch ends, ``run.ckpt_every_steps``, ``run.ckpt_every_minutes``, a
  stop signal, the end) and the newest ``run.keep`` epoch checkpoints;
- logs one row per logging step and per validation (metrics.jsonl, TensorBoard, W&B). The
  loader's one-off compilation (first batch of the process) is announced and kept out of
  the throughput and data-wait figures.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from vicmae.config import to_dict
from vicmae.distributed import barrier
from vicmae.engine.checkpoint import last_line, rng_state
from vicmae.engine.metrics import MetricsLogger
from vicmae.engine.run_folder import Checkpoints
from vicmae.engine.setup import Run, restore_rng
from vicmae.engine.signals import StopFlag, StoppedBySignal, stop_on_signals
from vicmae.engine.step_info import StepInfo

log = logging.getLogger("vicmae")

# loss_fn(model, batch, step) -> (loss to backpropagate, detached parts (k,) to log; part 0
# is the loss itself).
LossFn = Callable[[nn.Module, Any, "StepInfo"], tuple[Tensor, Tensor]]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing computed after the last finite step was saved."""


@dataclass
class Job:
    """What a job hands the engine (see the module docstring)."""

    model: nn.Module  # what the optimiser trains, unwrapped
    optimizer: torch.optim.Optimizer
    loader: Any  # VicmaeLoader of micro-batches for this rank
    micro_batch: int
    accum: int
    loss: LossFn
    lr: np.ndarray  # per global step; each group's lr is this x its "lr_scale"
    part_names: tuple[str, ...] = ("loss",)
    logged: dict[str, np.ndarray] = field(default_factory=dict)  # more per-step schedules
    evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None
    best: tuple[str, str] | None = None  # ("val_top1", "max"): what best.pt keeps
    clip_grad: float | None = None


@dataclass(frozen=True)
class FitResult:
    """What a finished (or stopped-early) run leaves behind."""

    run_dir: Path
    step: int
    epoch: int
    checkpoint: Path | None
    last_metrics: dict[str, Any]
    val_metrics: dict[str, float]
    best: dict[str, Any] | None


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batches: Iterator[Any],
    loss_fn: Callable[[nn.Module, Any, int], tuple[Tensor, Tensor]],
    *,
    accum: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
    clip_grad: float | None = None,
) -> Tensor:
    """One optimiser step over ``accum`` micro-batches; returns the mean loss parts (k,).

    The result stays on the device (no host sync). Under DDP, gradients are all-reduced
    only on the last micro-batch.
    """
    total: Tensor | None = None
    for i in range(accum):
        batch = next(batches)
        last = i == accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else None
        with sync or model.no_sync():
            with autocast():
                loss, parts = loss_fn(model, batch, i)
            scaler.scale(loss / accum).backward()
        parts = parts.detach().float() / accum
        total = parts if total is None else total + parts
    if clip_grad:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    assert total is not None
    return total


def fit(run: Run, job: Job) -> FitResult:
    """Train ``job`` as ``run.cfg`` says (see the module docstring)."""
    spe = _steps_per_epoch(job)
    scaler = run.scaler()
    start = _restore(run, job, scaler, spe)
    step, epoch = start.step, start.epoch
    end = _plan(run, job, spe, start)
    model = _wrap(job.model, run)
    book = _Book(run, job, model, scaler, spe, start, end)
    batches: _Batches | None = None
    with stop_on_signals() as stop, book:
        model.train()
        try:
            while step < end:
                if batches is None:  # an epoch starts, past the batches a resumed run used
                    batches = _Batches(job.loader, epoch, skip=(step - epoch * spe) * job.accum)
                for group in job.optimizer.param_groups:
                    group["lr"] = float(job.lr[step]) * group.get("lr_scale", 1.0)
                parts = train_step(
                    model, job.optimizer, scaler, batches, _loss_at(run, job, step, epoch),
                    accum=job.accum, autocast=run.autocast, clip_grad=job.clip_grad,
                )  # fmt: skip
                book.window.add(parts, step)
                step += 1
                epoch_end = step % spe == 0
                epoch += int(epoch_end)
                book.after_step(step, epoch, epoch_end, batches, stop)  # log, evaluate, save
                if epoch_end:  # this epoch's loader threads stop before the next one starts
                    batches.close()
                    batches = None
        finally:
            if batches is not None:
                batches.close()
        book.finish(step, epoch)
    barrier()  # rank 0's last save is on disk before any rank returns
    return book.result(step, epoch)


@dataclass(frozen=True)
class _Start:
    """Where a run starts: its place in the schedule (``step``, ``epoch``), the best
    validation so far, and ``shift``: how far the steps it logs and saves run ahead of that
    place. 0 unless a resume changed the batch or the data (``--allow-changes``): that
    renumbers the schedule's steps, while the steps already logged keep their numbers."""

    step: int = 0
    epoch: int = 0
    best: dict[str, Any] | None = None
    shift: int = 0


def _steps_per_epoch(job: Job) -> int:
    """Optimiser steps per epoch; a partial one is dropped."""
    spe = len(job.loader) // job.accum
    if spe == 0:
        raise ValueError(
            f"an epoch has {len(job.loader)} batches of {job.micro_batch}, fewer than one "
            f"optimiser step ({job.accum} x {job.micro_batch} per device); use a smaller "
            "optim.batch_size"
        )
    return spe


def _restore(run: Run, job: Job, scaler: torch.amp.GradScaler, spe: int) -> _Start:
    """Where a resumed run continues, with every state put back; step 0 otherwise."""
    state = run.resume
    if state is None:
        return _Start()
    try:
        job.model.load_state_dict(state["model"])
    except RuntimeError as exc:  # shapes that differ although the config matched
        raise ValueError(
            f"{run.resume_path}: its model does not fit this config ({last_line(exc)})"
        ) from None
    job.optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    # Samples already trained on in this epoch, in steps of this run's batch (the same
    # step count unless optim.batch_size or the data changed, with --allow-changes).
    saved_batch = int(state["config"]["optim"]["batch_size"])
    in_epoch = int(state["step_in_epoch"]) * saved_batch // run.cfg.optim.batch_size
    step = int(state["epoch"]) * spe + min(in_epoch, spe)
    saved = int(state["step"])  # what metrics.jsonl and TensorBoard count up to
    if step != saved:
        log.warning(
            "resuming at another batch size or data: the schedule continues at its step %d "
            "of %d, the logged steps at %d", step, run.cfg.optim.epochs * spe, saved,
        )  # fmt: skip
    restore_rng(state, run.info)
    log.info("resumed from %s at step %d (epoch %d)", run.resume_path, saved, step // spe)
    return _Start(step, step // spe, state.get("best"), saved - step)


def _plan(run: Run, job: Job, spe: int, start: _Start) -> int:
    """Log what the run will do; return the schedule step it stops at: the end, or
    ``run.max_steps`` (counted in logged steps)."""
    cfg, info = run.cfg, run.info
    total = cfg.optim.epochs * spe
    cap = cfg.run.max_steps
    end = total if cap is None else max(start.step, min(total, cap - start.shift))
    log.info(
        "%d optimiser steps (%d epochs x %d); batch %d = %d per forward x %d accumulation x "
        "%d device(s); peak lr %.3g; %s %s",
        total, cfg.optim.epochs, spe, cfg.optim.batch_size, job.micro_batch, job.accum,
        info.world_size, float(np.max(job.lr)), run.device, run.precision,
    )  # fmt: skip
    if end == start.step and run.resume is not None:
        why = f"run.max_steps={cap}" if end < total else "that is the last step"
        log.info("nothing to train: the run is at step %d and %s", end + start.shift, why)
    return end


def _loss_at(run: Run, job: Job, step: int, epoch: int) -> Callable[[nn.Module, Any, int], tuple]:
    """``job.loss`` for the micro-batches of one optimiser step (``train_step`` gives each
    its micro-step)."""
    seed, rank = run.cfg.run.seed, run.info.rank
    return lambda model, batch, micro: job.loss(
        model, batch, StepInfo(step, micro, epoch, rank, seed)
    )


def _wrap(model: nn.Module, run: Run) -> nn.Module:
    """DistributedDataParallel across ranks, then torch.compile when asked."""
    if run.info.distributed:
        ids = [run.info.local_rank] if run.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if run.cfg.run.compile:
        model = torch.compile(model)
    return model


class _Book:
    """The loop's log / evaluate / save block, and what it has written so far.

    :meth:`after_step` runs after every optimiser step: every ``run.log_every_steps`` (and
    whenever a save is due) the loss window is all-reduced together with the ranks' stop
    requests and the checkpoint deadline, so every rank takes the same decision at the same
    step; then the row is logged, an epoch end is validated (``best.pt``), ``last.pt`` is
    saved when due, and a stop signal ends the run. Only rank 0 writes. Metrics and
    checkpoints count logged steps: the schedule's step + ``shift`` (see :class:`_Start`).
    """

    def __init__(
        self, run: Run, job: Job, model: nn.Module, scaler: torch.amp.GradScaler, spe: int,
        start: _Start, end: int,
    ) -> None:  # fmt: skip
        cfg = run.cfg
        self.run, self.job, self.model, self.scaler, self.spe, self.end = (
            run, job, model, scaler, spe, end
        )  # fmt: skip
        self.best, self.shift = start.best, start.shift
        self.saved: Path | None = run.resume_path
        self.last: dict[str, Any] = {}
        self.val: dict[str, float] = {}
        self.last_save = time.monotonic()
        self.trained = False  # a step was trained by this process
        self.window = _Window(len(job.part_names), run.device)
        self.ckpts = Checkpoints(run.dir, cfg.run.keep, enabled=run.info.is_main)
        self.metrics = MetricsLogger(
            run.dir, end + self.shift, enabled=run.info.is_main, progress=cfg.run.progress,
            start_step=start.step + self.shift, label=run.kind,
            wandb_project=cfg.run.wandb_project if cfg.run.wandb else None, config=to_dict(cfg),
        )  # fmt: skip

    def __enter__(self) -> _Book:
        return self

    def __exit__(self, *exc: object) -> None:
        self.metrics.close()

    def after_step(
        self, step: int, epoch: int, epoch_end: bool, batches: _Batches, stop: StopFlag
    ) -> None:
        """Log, validate, save and stop as due after optimiser step ``step`` (see above)."""
        r, at = self.run.cfg.run, step + self.shift  # at: the step logged and saved
        self.trained = True
        due = step % r.ckpt_every_steps == 0 or epoch_end or step == self.end
        if not (due or step % r.log_every_steps == 0):
            self.metrics.advance(at)
            return
        late = r.ckpt_every_minutes > 0 and (
            time.monotonic() - self.last_save > 60 * r.ckpt_every_minutes
        )
        means, bad, stopped, late = self.window.sync(bool(stop), late, self.run.info)
        if bad is not None:
            raise NonFiniteLossError(
                f"loss is {bad[1]} at step {bad[0] + 1 + self.shift} (epoch {epoch}); stopped. "
                + (f"Last good checkpoint: {self.saved}" if self.saved else "No checkpoint yet.")
            )
        job = self.job
        self.last = {
            "epoch": step / self.spe, **dict(zip(job.part_names, means, strict=True)),
            "lr": float(job.lr[step - 1]), **{k: float(v[step - 1]) for k, v in job.logged.items()},
            **batches.throughput(self.window.steps * self.run.cfg.optim.batch_size),
        }  # fmt: skip
        self.metrics.log(at, self.last)
        self.window.restart(batches)
        if epoch_end and job.evaluate is not None:
            self.val = job.evaluate(job.model, epoch)
            self.metrics.log(at, {"epoch": float(epoch), **self.val})
            self.best = _better(self.best, self.val, job.best, epoch) or self.best
            if self.best is not None and self.best["epoch"] == epoch:
                self.ckpts.save_best(self.state(step, epoch))
            self.model.train()
            self.window.restart(batches)
        if due or stopped or late:
            self.saved = self.ckpts.save(self.state(step, epoch), epoch_end=epoch_end) or self.saved
            self.last_save = time.monotonic()
        if stopped:
            barrier()
            raise StoppedBySignal(stop.signal_name or "a signal", self.saved, at)

    def finish(self, step: int, epoch: int) -> None:
        """Validate a run that stopped short of an epoch end: it still gets its figures."""
        if self.job.evaluate is None or (self.val and step % self.spe == 0):
            return
        self.val = self.job.evaluate(self.job.model, epoch)
        if self.trained:  # else the run that trained up to here logged this row already
            self.metrics.log(step + self.shift, {"epoch": step / self.spe, **self.val})

    def state(self, step: int, epoch: int) -> dict[str, Any]:
        """What a checkpoint holds: every state a resume needs, each rank's RNG streams too."""
        run, job = self.run, self.job
        rngs = [rng_state()]
        if run.info.distributed:  # every rank's stream, so each rank resumes its own
            rngs = [None] * run.info.world_size
            dist.all_gather_object(rngs, rng_state())
        return {
            "kind": run.kind, "model": job.model.state_dict(),
            "optimizer": job.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "step": step + self.shift, "epoch": epoch, "step_in_epoch": step - epoch * self.spe,
            "micro_batch": job.micro_batch, "rng": rngs, "best": self.best,
            "config": to_dict(run.cfg),
        }  # fmt: skip

    def result(self, step: int, epoch: int) -> FitResult:
        return FitResult(
            self.run.dir, step + self.shift, epoch, self.saved, self.last, self.val, self.best
        )


def _better(
    best: dict | None, val: dict[str, float], rule: tuple[str, str] | None, epoch: int
) -> dict | None:
    """The new best record when ``val`` beats ``best`` by ``rule`` (key, "max"|"min")."""
    if rule is None or rule[0] not in val:
        return None
    key, mode = rule
    value = float(val[key])
    if best is not None:
        if (mode == "max" and value <= best["value"]) or (mode == "min" and value >= best["value"]):
            return None
    return {"key": key, "value": value, "epoch": epoch}


class _Window:
    """Loss parts summed on the device between logging steps, and the first non-finite step."""

    def __init__(self, k: int, device: torch.device) -> None:
        self.sums = torch.zeros(k, device=device)
        # The first non-finite step, inf while there is none: inf is what a minimum over
        # steps (and over ranks) starts from, so no step number has to stand for "none".
        self.first_bad = torch.full((), math.inf, dtype=torch.float64, device=device)
        self.bad_value = torch.zeros((), device=device)
        self.steps = 0

    def add(self, parts: Tensor, step: int) -> None:
        first = torch.isinf(self.first_bad) & ~torch.isfinite(parts[0])  # no host sync
        self.first_bad = torch.where(first, torch.full_like(self.first_bad, step), self.first_bad)
        self.bad_value = torch.where(first, parts[0], self.bad_value)
        self.sums += parts
        self.steps += 1

    def sync(self, stop: bool, late: bool, info: Any) -> tuple[list, tuple | None, bool, bool]:
        """All-reduce: (mean parts, (first bad step, value) or None, stop?, checkpoint due?)."""
        sums = self.sums.clone()
        dev = sums.device
        flags = torch.stack([  # MAX over ranks: any rank's request, the earliest bad step
            torch.tensor(float(stop), dtype=torch.float64, device=dev),
            torch.tensor(float(late), dtype=torch.float64, device=dev),
            -self.first_bad,
        ])  # fmt: skip
        if info.distributed:
            dist.all_reduce(sums)
            sums /= info.world_size
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        means = (sums / max(self.steps, 1)).tolist()
        stopped, due, neg_bad = flags.tolist()
        bad = None
        if math.isfinite(neg_bad):  # this rank's value, or nan when another rank's step was
            mine = math.isfinite(self.first_bad.item())
            bad = (int(-neg_bad), float(self.bad_value.item()) if mine else math.nan)
        return means, bad, stopped > 0, due > 0

    def restart(self, batches: _Batches) -> None:
        self.sums.zero_()
        self.steps = 0
        batches.restart_clock()


class _Batches:
    """An epoch's batches, past the ones a resumed run already used, with data-wait timing.

    A loader's first batch waits for numba to compile its pipeline: that is announced and
    kept out of the figures.
    """

    def __init__(self, loader: Any, epoch: int, skip: int) -> None:
        loader.set_epoch(epoch)
        self._it = iter(loader)
        pending = []
        if not getattr(loader, "compiled_by_engine", False):
            log.info("compiling the loader (its first batch; can take a minute) ...")
            t0 = time.perf_counter()
            pending.append(next(self._it))
            loader.compiled_by_engine = True
            log.info("loader compiled in %.1f s", time.perf_counter() - t0)
        for _ in range(skip):  # what the stopped run already trained on
            if pending:
                pending.pop()
            else:
                next(self._it)
        self._first = pending[0] if pending else None
        self.restart_clock()

    def __next__(self) -> Any:
        if self._first is not None:
            batch, self._first = self._first, None
            return batch
        t0 = time.perf_counter()
        batch = next(self._it)
        self._wait += time.perf_counter() - t0
        return batch

    def __iter__(self) -> _Batches:
        return self

    def restart_clock(self) -> None:
        self._t0, self._wait = time.perf_counter(), 0.0

    def throughput(self, samples: int) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        return {"samples_per_s": samples / elapsed, "data_wait_pct": 100 * self._wait / elapsed}

    def close(self) -> None:
        """Stop the loader's threads now (not at interpreter exit, when they may be mid-batch)."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()
