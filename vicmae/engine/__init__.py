"""The training engine the three jobs share (``vicmae.jobs``): set-up, one step, one loop.

``setup`` (processes, device, run folder, resume, loader) with ``batching`` (micro-batch,
accumulation, the GPU memory probe) -> ``loop`` (``train_step`` and ``fit``) with
``checkpoint`` (safe files), ``run_folder`` (what a run leaves and what protects it),
``signals`` (SIGTERM/SIGUSR1), ``metrics`` (JSONL, TensorBoard, W&B), ``schedules``,
``param_groups`` (the optimiser); ``evaluation`` holds what the two evaluation jobs share.
"""

from vicmae.engine.loop import FitResult, Job, NonFiniteLossError, StepInfo, fit, train_step

__all__ = ["FitResult", "Job", "NonFiniteLossError", "StepInfo", "fit", "train_step"]
