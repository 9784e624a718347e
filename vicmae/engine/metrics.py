"""Where training metrics go: a JSONL file, TensorBoard, Weights & Biases, and the log.

``RUN_DIR/metrics.jsonl`` holds one JSON object per logged step (``step``, ``epoch``,
``lr``, each loss, ``samples_per_s``, ``data_wait_pct``...) and per validation (``val_*``
keys); ``vicmae plot`` reads it back. TensorBoard events go to ``RUN_DIR/tb/``; W&B gets the
same rows when ``run.wandb`` is on. Only rank 0 writes anything. A resumed run
(``start_step``: its checkpoint's step) continues all of them: every step up to the
checkpoint's is kept, what a stopped run logged after it is replaced.

Every logged step is also one plain log line (never cut to the terminal's width); on a
terminal a progress bar (bar, steps, time left: short enough for any width) stays below,
elsewhere (a job's log file) each line ends with the time elapsed and the time left.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger("vicmae")


class MetricsLogger:
    """JSONL + TensorBoard (+ W&B) + progress, for rank 0 only.

    Example::

        with MetricsLogger(run_dir, total_steps=1000, progress=True) as ml:
            ml.log(step, {"loss": 0.5, "lr": 1e-4})
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        total_steps: int,
        *,
        enabled: bool = True,
        progress: bool = True,
        tensorboard: bool = True,
        start_step: int = 0,
        label: str = "train",
        wandb_project: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.total_steps = total_steps
        self._start = (time.monotonic(), start_step)  # where this process began
        self._first: tuple[float, int] | None = None  # its first row: where the rate is taken
        self._jsonl = None
        self._tb = None
        self._wandb = None
        self._progress = None
        self._task = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Append: a resumed run continues the same file (steps stay monotonic).
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # Events at purge_step and after are dropped when read: what a stopped run wrote
            # after its checkpoint (whose own step is kept), which this run writes again.
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=start_step + 1)
        if wandb_project is not None:
            self._wandb = _start_wandb(self.run_dir, wandb_project, config or {})
        if progress and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=total_steps, completed=start_step)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record ``metrics`` for global ``step`` everywhere enabled, and log one line."""
        if not self.enabled:
            return
        row = {"step": step, "time": time.time(), **metrics}
        assert self._jsonl is not None
        self._jsonl.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        self.advance(step)
        timing = "" if self._progress is not None else f"  {self._timing(step)}"
        log.info("step %d/%d  %s%s", step, self.total_steps, summary(metrics), timing)

    def _timing(self, step: int) -> str:
        """``elapsed 0:01:05  ETA 0:12:00``: since this process started, and what is left at
        the pace since its first row (which the loader's compilation and the first steps'
        warm-up do not slow); the first row has only the pace since the start."""
        now = time.monotonic()
        if self._first is None:
            self._first = (now, step)
        t0, s0 = self._first if step > self._first[1] else self._start
        eta = "?"
        if step > s0:
            eta = _clock((now - t0) / (step - s0) * max(self.total_steps - step, 0))
        return f"elapsed {_clock(now - self._start[0])}  ETA {eta}"

    def advance(self, step: int) -> None:
        """Move the progress bar without logging a row."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def close(self) -> None:
        """Flush and close everything (safe to call twice)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_wandb(run_dir: Path, project: str, config: dict[str, Any]) -> Any:
    """A W&B run that a resumed job continues (its id is kept in ``RUN_DIR/wandb_id``)."""
    import wandb  # checked at start: run.wandb=true needs it installed

    from vicmae_data.atomic import write_text_atomic

    id_file = run_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
    write_text_atomic(id_file, run_id)
    return wandb.init(
        project=project, id=run_id, resume="allow", dir=str(run_dir), config=config,
        name=run_dir.name,
    )  # fmt: skip


_FORMATS = (
    ("loss", "loss {:.4f}"),
    ("loss_recon", "recon {:.4f}"),
    ("loss_contrastive", "ctr {:.4f}"),
    ("val_top1", "val top-1 {:.2f}%"),
    ("val_top5", "val top-5 {:.2f}%"),
    ("val_mean_class_acc", "val mean-class {:.2f}%"),
    ("val_loss", "val loss {:.4f}"),
    ("lr", "lr {:.2e}"),
    ("lambda", "λ {:.3f}"),
    ("samples_per_s", "{:.1f} samples/s"),
    ("data_wait_pct", "data {:.0f}%"),
)


def _clock(seconds: float) -> str:
    """``H:MM:SS`` (as convert's progress lines)."""
    return str(timedelta(seconds=round(seconds)))


def summary(m: dict[str, Any]) -> str:
    """The metrics people read, on one line: ``loss 0.5123  lr 1.2e-04  812.3 samples/s``."""
    return "  ".join(fmt.format(m[key]) for key, fmt in _FORMATS if key in m)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``RUN_DIR/metrics.jsonl`` (a truncated last line is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a run directory?)")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
