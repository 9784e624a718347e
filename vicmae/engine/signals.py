"""Stop signals: SIGTERM and SIGUSR1 ask a job to save a checkpoint and exit for a requeue.

Schedulers warn a job before they take its nodes away: SLURM sends SIGTERM at preemption
or time-out (and SIGUSR1 when asked with ``--signal=USR1@120``); ``torchrun`` passes
SIGTERM on to every worker. The handler only sets a flag; the training loop reads it at
its next logging step (every ``run.log_every_steps`` steps, where the ranks agree anyway),
saves ``last.pt``, and the command exits with :data:`REQUEUE_EXIT_CODE`, so that a job
script can tell "stopped, resume me" from success and from failure::

    vicmae train pretrain ... --resume
    [ $? -eq 75 ] && scontrol requeue "$SLURM_JOB_ID"
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to retry".
REQUEUE_EXIT_CODE = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StoppedBySignal(Exception):  # noqa: N818 (an outcome, not an error)
    """The job saved ``checkpoint`` and stopped because it received ``signal_name``."""

    def __init__(self, signal_name: str, checkpoint: Path | None, step: int) -> None:
        self.signal_name, self.checkpoint, self.step = signal_name, checkpoint, step
        super().__init__(
            f"stopped by {signal_name} at step {step}; checkpoint {checkpoint}; "
            f"continue with --resume (exit status {REQUEUE_EXIT_CODE})"
        )


class StopFlag:
    """Which stop signal arrived, if any (set from a signal handler, read by the loop)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Within the block, SIGTERM/SIGUSR1 set the yielded flag instead of killing the process.

    Outside the main thread (where Python cannot install handlers) the flag never sets.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag.signal_name = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
