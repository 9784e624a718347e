"""Atomic checkpoints and the RNG states that make a resumed run repeat an uninterrupted one.

A checkpoint is one ``torch.save`` dict: ``model``, ``optimizer``, ``scaler``, ``step``,
``epoch``, ``batch_in_epoch``, ``rng`` (torch, cuda, numpy, python), ``loader_epoch``,
``config`` (plain dict) and anything else the caller adds. It is written to ``NAME.tmp``,
flushed to disk, then renamed over ``NAME``: a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from (torch CPU and CUDA, numpy, python)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself must reach the disk too, or a power cut can lose it.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (or a plain state dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    # RNG states hold numpy arrays and python tuples, which weights_only loading refuses.
    return torch.load(path, map_location=map_location, weights_only=False)


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def unwrapped_name(key: str) -> str:
    """A parameter or state-dict key without DDP's and torch.compile's prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint, whichever of the usual keys holds them."""
    for key in ("model", "state_dict", "model_state"):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return checkpoint[key]
    return checkpoint
