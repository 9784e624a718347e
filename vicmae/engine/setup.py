"""Setting up a run: processes, device, run folder, resume state, precision, seeds, loader.

:func:`start_run` does, for every job and before any data is touched: join the process
group under ``torchrun``, refuse a device that is not there, protect a folder that holds a
run, load the checkpoint to resume (safely) and refuse a resume whose settings or data
(:mod:`vicmae.engine.data_record`) differ from the saved run's (unless allowed), write
``config.yaml`` and ``data.json`` and seed every RNG. The ranks agree on every check: one
rank's error stops them all (:func:`agree`), none is left waiting. The returned
:class:`Run` then answers the per-job questions: autocast, loss scaler, micro-batch size
(:mod:`vicmae.engine.batching`), loaders.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vicmae.config import (
    ConfigError,
    JobConfig,
    LoaderConfig,
    config_summary,
    dump_yaml,
    loader_paths,
    parse_beton,
    resume_differences,
)
from vicmae.distributed import DistInfo, setup_distributed, teardown_distributed
from vicmae.engine.batching import accumulation, batch_too_large, choose_micro_batch
from vicmae.engine.checkpoint import load_checkpoint, set_rng_state
from vicmae.engine.data_record import check_data, data_record, write_record
from vicmae.engine.run_folder import (
    RunFolderError,
    clear_run_dir,
    find_checkpoint,
    guard_run_dir,
    truncate_metrics,
    undo_failed_start,
)
from vicmae_data.atomic import write_text_atomic
from vicmae_data.oserror import os_cause

log = logging.getLogger("vicmae")


@dataclass
class Run:
    """One job's process-level context (see the module docstring)."""

    kind: str  # "pretrain" | "linprobe" | "finetune"
    cfg: JobConfig
    info: DistInfo
    dir: Path
    resume: dict[str, Any] | None  # the checkpoint resumed from (tensors on the CPU)
    resume_path: Path | None
    precision: str  # "bf16" | "fp16" | "fp32"
    owns_group: bool = False  # this run joined the process group (and leaves it at the end)
    data: dict[str, Any] | None = None  # what it trains on (RUN/data.json, see data_record)

    @property
    def device(self) -> torch.device:
        return self.info.device

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's autocast context (bf16 by default on CUDA, none on a CPU)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled only for fp16 (bf16 has fp32's exponent range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def micro_batching(
        self,
        model: nn.Module,
        probe: Callable[[int], None] | None,
        state_bytes_per_param: int,
        multiple_of: int = 1,
    ) -> tuple[int, int]:
        """(micro batch per device, accumulation steps) for ``cfg.optim`` on this job: see
        :func:`vicmae.engine.batching.choose_micro_batch` (the resumed run's micro-batch is
        kept)."""
        saved = (self.resume or {}).get("micro_batch")
        return choose_micro_batch(
            self.cfg.optim, self.info, saved, model, probe, state_bytes_per_param, multiple_of
        )

    def loader(
        self,
        betons: str | list,
        batch_size: int,
        *,
        num_views: int | None,
        train: bool,
        resolution: int,
        drop_last: bool = True,
        test_view: tuple[int, int, int, int] | None = None,
        relabel: str | list[int] = "auto",
    ) -> Any:
        """``make_loader`` with this run's ranks, seed and data settings.

        ``drop_last`` marks a training loader of micro-batches: data too small for one
        optimiser step (``optim.batch_size``) is refused in the trainer's terms. Several
        files are mixed as ``data.mix`` says; ``data.check_crc`` checks every sample read
        (training and validation alike). Clips (``data.sampling`` clip or segment) take
        ``data.clip_frames``/``clip_stride``; ``test_view`` and ``relabel`` are
        ``make_loader``'s."""
        from vicmae_data import make_loader
        from vicmae_data.load.loader import BatchTooLargeError

        d: LoaderConfig = self.cfg.data
        paths = loader_paths(tuple(betons)) if isinstance(betons, list | tuple) else betons
        dist_kw: dict[str, Any] = {"relabel": relabel}
        if test_view is not None:
            dist_kw["test_view"] = test_view
        if hasattr(d, "clip_frames"):  # an evaluation's data (EvalDataConfig)
            dist_kw |= {"clip_frames": d.clip_frames, "clip_stride": d.clip_stride}
            dist_kw["flip"] = d.flip
            if d.sampling in ("clip", "segment"):
                num_views = d.clip_frames  # a clip's views are its frames
        if self.info.distributed:
            dist_kw |= {"distributed": True, "rank": self.info.rank}
            dist_kw["world_size"] = self.info.world_size
        try:
            loader = make_loader(
                paths, batch_size, num_workers=d.num_workers, sampling=d.sampling,
                delta=d.delta, num_views=num_views, resolution=resolution,
                seed=self.cfg.run.seed, memory=d.memory, drop_last=drop_last, train=train,
                video_scale=d.video_scale, image_scale=d.image_scale, mix=d.mix,
                check_crc=d.check_crc, **dist_kw,
            )  # fmt: skip
        except BatchTooLargeError as exc:
            if not drop_last:
                raise
            raise batch_too_large(
                self.cfg.optim, self.info.world_size, exc.path, exc.per_rank, exc.weights
            ) from None
        used = len(loader) * batch_size  # the samples one epoch gives each device
        if drop_last and used < self.cfg.optim.batch_size // self.info.world_size:
            names = [parse_beton(b)[0] for b in ([betons] if isinstance(betons, str) else betons)]
            # Concatenated files are one dataset; by weight, the first defines the epoch.
            first = " + ".join(names) if d.mix == "concat" else names[0]
            what = f"an epoch of {len(loader)} batch(es) of {batch_size} per device"
            raise batch_too_large(self.cfg.optim, self.info.world_size, first, [used], [1.0], what)
        return loader

    def __post_init__(self) -> None:
        # Whether this start makes the run folder: a failed start then removes it again.
        self._made_dir = not self.dir.exists()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        """Undo a start that failed before its first step (the corrected command must not
        find a run there), and leave the process group this run joined."""
        try:
            if exc_type is not None and self.info.is_main:
                undo_failed_start(self.dir, self._made_dir)
        finally:
            if self.owns_group:
                teardown_distributed()

    def write_config(self) -> None:
        """``config.yaml`` and ``data.json`` (rank 0); :class:`RunFolderError` naming the
        cause (a read-only file system, a full disk) when the folder cannot be written."""
        if not self.info.is_main:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.dir / "config.yaml", dump_yaml(self.cfg))
            if self.data is not None:
                write_record(self.dir, self.data)
        except OSError as exc:
            raise RunFolderError(
                f"{self.dir}: cannot write the run folder ({os_cause(exc)})"
            ) from None


def start_run(
    cfg: JobConfig,
    kind: str,
    *,
    resume: str | Path | bool | None = None,
    overwrite: bool = False,
    allow_changes: bool = False,
) -> Run:
    """Everything before the model: see the module docstring. Raises one-line errors.

    ``resume``: None/False (a new run), True (``cfg.run.out``'s ``last.pt``; a fresh start
    when there is none yet, which is what a requeued job script wants), or a path (a run
    folder or a checkpoint file).
    """
    joined = not dist.is_initialized()
    info = setup_distributed(cfg.run.device)
    owns = joined and dist.is_initialized()
    if cfg.run.wandb and info.is_main:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(
                "run.wandb=true but wandb is not installed (pip install wandb)"
            ) from None
    accumulation(cfg.optim, info.world_size)  # a batch layout that cannot work fails now
    run_dir = Path(cfg.run.out)
    resuming = resume is not None and resume is not False
    state, path, data, problem = None, None, None, None
    try:  # each rank checks on its own; then they agree (below) before anything is written
        guard_run_dir(run_dir, resume=resuming, overwrite=overwrite)
        data = data_record(cfg)
        if resuming:
            path = find_checkpoint(resume, run_dir)
            if path is None:
                log.warning("--resume: no checkpoint in %s yet; starting from scratch", run_dir)
            else:
                state = load_checkpoint(path, map_location="cpu")
                _check_resumable(state, path, cfg, kind, allow_changes)
                data = check_data(path, data, int(state["step"]), allow_changes)
    except (ValueError, OSError) as exc:
        problem = exc
    agree(info, problem)
    if info.distributed:  # every rank must continue from the same checkpoint
        steps = [None] * info.world_size
        dist.all_gather_object(steps, (str(path), int(state["step"])) if state else None)
        if any(s != steps[0] for s in steps):
            raise RunFolderError(f"--resume: the ranks found different checkpoints: {steps}")
    precision = cfg.run.precision
    if precision == "auto":
        precision = "bf16" if info.device.type == "cuda" else "fp32"
    run = Run(kind, cfg, info, run_dir, state, path, precision, owns, data)
    try:
        if info.is_main:
            if not resuming:  # --overwrite, or what a failed start left: no run (guarded above)
                clear_run_dir(run_dir)
            if resuming:
                truncate_metrics(run_dir / "metrics.jsonl", int(state["step"]) if state else 0)
        run.write_config()
    except OSError as exc:  # a read-only file system, a full disk
        problem = RunFolderError(f"{run_dir}: cannot write the run folder ({os_cause(exc)})")
    except ValueError as exc:
        problem = exc
    agree(info, problem)  # rank 0 wrote the folder, or every rank stops with its reason
    seed_everything(cfg.run.seed + info.rank)  # each rank draws its own masks and augmentations
    if info.is_main:
        log.info("%s", config_summary(cfg))  # the whole config: RUN/config.yaml
        if cfg.optim.warmup_epochs >= cfg.optim.epochs:
            log.warning(
                "optim.warmup_epochs=%g is as long as the run (optim.epochs=%d): the lr only "
                "rises, it never decays; set optim.warmup_epochs below it (the recipes warm "
                "up for 5-11%% of the run)", cfg.optim.warmup_epochs, cfg.optim.epochs,
            )  # fmt: skip
    return run


def agree(info: DistInfo, problem: BaseException | None) -> None:
    """Raise on every rank the first ``problem`` any rank had; return when none had one.

    A rank that stops alone leaves the others waiting in their next collective for ever:
    every rank calls this at the same point, so all of them stop, each with the reason.
    """
    if info.distributed:
        found: list[Any] = [None] * info.world_size
        dist.all_gather_object(found, None if problem is None else str(problem))
        if problem is None:
            for rank, message in enumerate(found):
                if message is not None:
                    raise RunFolderError(f"rank {rank} stopped the run: {message}")
    if problem is not None:
        raise problem


def _check_resumable(state: dict, path: Path, cfg: JobConfig, kind: str, allow: bool) -> None:
    saved_kind = state.get("kind", "pretrain")
    if saved_kind != kind or "config" not in state or "step" not in state:
        what = f"a {saved_kind} checkpoint" if "step" in state else "not a training checkpoint"
        raise RunFolderError(f"--resume {path}: {what}; it cannot continue a {kind} run")
    diffs = resume_differences(state["config"], cfg)
    shape = [d for d in diffs if d[0].startswith("model.") and d[0].split(".")[1] in _SHAPE_KEYS]
    if shape:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in shape)
        raise ConfigError(f"cannot resume {path} with another model ({listed})")
    if diffs and not allow:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs)
        raise ConfigError(
            f"--resume: these settings differ from the saved run's: {listed}. "
            "Drop them to continue the run as it was, or pass --allow-changes"
        )
    if diffs:
        log.warning("resuming with changed settings: %s", "; ".join(k for k, *_ in diffs))


# Model settings that change parameter shapes: never resumable across.
_SHAPE_KEYS = (
    "arch", "decoder_dim", "decoder_depth", "decoder_heads", "projector_dims", "checkpoint",
    "random_init", "learn_pos_embed", "pos_embed",
)  # fmt: skip


def restore_rng(state: dict[str, Any], info: DistInfo) -> None:
    """This rank's RNG states from a checkpoint (rank 0's when the world grew)."""
    states = state["rng"]
    if len(states) != info.world_size:
        log.warning(
            "resuming %d rank(s) from a run of %d: data shards and random draws differ "
            "from an uninterrupted run", info.world_size, len(states),
        )  # fmt: skip
    set_rng_state(states[min(info.rank, len(states) - 1)])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python from one number."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
