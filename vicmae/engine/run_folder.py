"""A run folder and its checkpoints: what a run leaves behind, and what protects it.

Every job writes the same folder::

    RUN/config.yaml      the resolved config (also inside every checkpoint)
    RUN/data.json        what it trains on: each .beton's size, samples, fingerprint,
                         classes (:mod:`vicmae.engine.data_record`; checked by --resume)
    RUN/last.pt          the latest state: every epoch end, every run.ckpt_every_steps,
                         every run.ckpt_every_minutes, and when stopped by a signal
    RUN/best.pt          the state with the best validation metric so far (evaluations)
    RUN/epoch_NNNN.pt    the state at the end of epoch NNNN; the newest run.keep are kept
    RUN/metrics.jsonl    one JSON object per logged step and per validation
    RUN/tb/              TensorBoard events
    RUN/result.json      an evaluation's final figures

A folder counts as a run once its first checkpoint (or an evaluation's result) exists; it is
never written into by accident: starting a job there needs ``resume`` (continue it) or
``overwrite`` (replace its checkpoints and metrics). What a start that failed before its
first checkpoint left (``config.yaml``, metrics, ``tb/``) is no run: the job removes it on
its way out when it had logged no step, and a new start there replaces it, so the corrected
command is never refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from vicmae.engine.checkpoint import save_checkpoint
from vicmae.engine.data_record import DATA_RECORD
from vicmae_data.atomic import atomic_open, atomic_path

log = logging.getLogger("vicmae")

LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
# An evaluation's architecture, input and label space (vicmae/engine/label_space.py).
CLASSIFIER_RECORD = "classifier.json"
_EPOCH = re.compile(r"^epoch_(\d+)\.pt$")
# What makes a folder a run (any one of them; epoch_NNNN.pt too): a state to resume or a result.
RUN_MARKERS = (LAST, BEST, "result.json")
# What a job writes before its first checkpoint: not a run on its own.
START_FILES = ("config.yaml", METRICS, DATA_RECORD, CLASSIFIER_RECORD)
START_DIRS = ("tb", "plots")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (it holds a run; nothing to resume)."""


def epoch_name(epoch: int) -> str:
    """``epoch_0012.pt``: the state after ``epoch`` epochs."""
    return f"epoch_{epoch:04d}.pt"


def run_files(run_dir: Path) -> list[str]:
    """The names in ``run_dir`` that belong to a run (empty: not a run folder)."""
    if not run_dir.is_dir():
        return []
    found = [n for n in RUN_MARKERS if (run_dir / n).exists()]
    return found + sorted(p.name for p in run_dir.iterdir() if _EPOCH.match(p.name))


def guard_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds one, unless told what to do."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: run.out names a file, not a folder")
    found = run_files(run_dir)
    if found and not resume and not overwrite:
        raise RunFolderError(
            f"{run_dir} already holds a run ({', '.join(found[:4])}); pass --resume to "
            "continue it, or --overwrite to start again and replace its checkpoints and metrics"
        )


def clear_run_dir(run_dir: Path) -> None:
    """Before a new run: remove a run's checkpoints, metrics and results (``--overwrite``),
    or what a start that failed before its first checkpoint left; nothing else."""
    if not run_dir.is_dir():
        return
    ran = run_files(run_dir)
    left = [n for n in (*START_FILES, *START_DIRS) if (run_dir / n).exists()]
    if left and not ran:
        log.warning("%s: replacing what a start with no checkpoint left (%s)", run_dir,
                    ", ".join(left))  # fmt: skip
    for name in ran:
        (run_dir / name).unlink(missing_ok=True)
    _remove_start_files(run_dir)


def undo_failed_start(run_dir: Path, made_dir: bool) -> None:
    """After a job failed before its first step: remove what its start wrote, and the folder
    itself when the start made it and nothing else is in it. A folder with a checkpoint or a
    logged step is left as it is (the record of what happened)."""
    metrics = run_dir / METRICS
    if not run_dir.is_dir() or run_files(run_dir):
        return
    if metrics.is_file() and metrics.stat().st_size > 0:
        return
    _remove_start_files(run_dir)
    if made_dir and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _remove_start_files(run_dir: Path) -> None:
    for name in START_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for sub in START_DIRS:
        shutil.rmtree(run_dir / sub, ignore_errors=True)


def find_checkpoint(resume: str | os.PathLike | bool, run_dir: Path) -> Path | None:
    """The checkpoint ``--resume`` names: a file, a run folder's ``last.pt``, or None (none yet)."""
    if resume is True or resume == "":
        target = run_dir
    else:
        target = Path(resume)
    if target.is_dir():
        return target / LAST if (target / LAST).is_file() else None
    if target.is_file():
        return target
    raise RunFolderError(f"--resume {target}: no such checkpoint or run folder")


class Checkpoints:
    """Writes ``last.pt``, ``best.pt`` and the newest ``keep`` epoch checkpoints (rank 0 only)."""

    def __init__(self, run_dir: Path, keep: int, enabled: bool = True) -> None:
        self.run_dir, self.keep, self.enabled = run_dir, keep, enabled

    def save(self, state: dict[str, Any], *, epoch_end: bool = False) -> Path | None:
        """Save ``last.pt`` (and ``epoch_NNNN.pt`` at an epoch end when keeping any)."""
        if not self.enabled:
            return None
        last = save_checkpoint(self.run_dir / LAST, state)
        if epoch_end and self.keep > 0:
            # The same bytes: a hard link (no second write), a copy where links fail.
            with atomic_path(self.run_dir / epoch_name(state["epoch"])) as tmp:
                try:
                    os.link(last, tmp)
                except OSError:
                    shutil.copyfile(last, tmp)
            kept = sorted(p for p in self.run_dir.iterdir() if _EPOCH.match(p.name))
            for old in kept[: -self.keep]:
                old.unlink(missing_ok=True)
        return last

    def save_best(self, state: dict[str, Any]) -> Path | None:
        """Save ``best.pt``: the model, its config and the metric (no optimiser state)."""
        if not self.enabled:
            return None
        keep = ("kind", "model", "config", "step", "epoch", "best")
        return save_checkpoint(self.run_dir / BEST, {k: state[k] for k in keep if k in state})


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
    return path


def truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (the stopped run went past its last checkpoint)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if _row_step(ln) <= step]
    with atomic_open(path, "w") as fh:
        fh.write("".join(ln + "\n" for ln in keep))


def _row_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf  # a torn last line goes too
