"""Where training metrics go: a JSONL file, TensorBoard, and a rich progress line.

``RUN_DIR/metrics.jsonl`` holds one JSON object per logged step (``step``, ``epoch``,
``lr``, ``lambda``, each loss, ``samples_per_s``, ``data_wait_pct``...); ``vicmae plot``
reads it back. TensorBoard events go to ``RUN_DIR/tb/``. Only rank 0 writes anything.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("vicmae")


class MetricsLogger:
    """JSONL + TensorBoard + (optionally) a rich progress bar, for rank 0 only.

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
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._jsonl = None
        self._tb = None
        self._progress = None
        self._task = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Append: a resumed run continues the same file (steps stay monotonic).
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))
        if progress and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]pretrain"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=total_steps, completed=start_step, info=""
            )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record ``metrics`` for global ``step`` everywhere enabled."""
        if not self.enabled:
            return
        row = {"step": step, "time": time.time(), **metrics}
        assert self._jsonl is not None
        self._jsonl.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(k, v, step)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=_summary(metrics))
        else:
            log.info("step %d %s", step, _summary(metrics))

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
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary(m: dict[str, Any]) -> str:
    parts = []
    for key, fmt in (
        ("loss", "loss {:.4f}"),
        ("loss_recon", "recon {:.4f}"),
        ("loss_contrastive", "ctr {:.4f}"),
        ("lr", "lr {:.2e}"),
        ("lambda", "λ {:.3f}"),
        ("samples_per_s", "{:.1f} samples/s"),
        ("data_wait_pct", "data {:.0f}%"),
    ):
        if key in m:
            parts.append(fmt.format(m[key]))
    return "  ".join(parts)


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
