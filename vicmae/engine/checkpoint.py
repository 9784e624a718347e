"""Checkpoints: written atomically, read without ever running code from the file.

A checkpoint is one ``torch.save`` dict of tensors, numbers, strings, lists and dicts only:
``model``, ``optimizer``, ``scaler``, the loop position, ``rng`` (as tensors and numbers,
see :func:`rng_state`) and ``config`` (a plain dict). :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``, whose unpickler builds only those types: a file whose
pickle would call anything (``os.system``, a class constructor, a numpy reconstructor) is
refused with a one-line :class:`CheckpointError`, never executed. Checkpoints are shared
and downloaded; there is deliberately no "trusted" fallback to full unpickling.

Every record of torch's zip carries the CRC32 of its bytes, which ``torch.load`` never
checks: a checkpoint with flipped bits loads, weights off by up to 1e36. So
:func:`load_checkpoint` checks every record's CRC32 first (:func:`verify_checkpoint`, a
read of the file at disk speed) and refuses a damaged file in one line naming it.

Writes go through :func:`vicmae_data.atomic.atomic_open` (a temporary name, fsync, rename):
a crash or a full disk leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vicmae_data.atomic import atomic_open
from vicmae_data.oserror import not_a_file, os_cause

__all__ = [
    "CheckpointError",
    "last_line",
    "load_checkpoint",
    "model_state",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "unwrapped_name",
    "verify_checkpoint",
]


class CheckpointError(ValueError):
    """A checkpoint cannot be read (unsafe, damaged) or written (disk full, read-only)."""


# ----------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors and plain numbers.

    numpy's and Python's states are tuples holding arrays and long int lists; they are
    stored as int64 tensors plus numbers so that the safe loader accepts them.
    """
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, mt, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),  # (624,) uint32 values
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": int(version), "state": torch.tensor(mt), "gauss": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    npst = state["numpy"]
    keys = npst["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npst["pos"], npst["has_gauss"], npst["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))


# ----------------------------------------------------------------------------- save / load


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename).

    Raises :class:`CheckpointError` naming the cause (disk full, read-only folder, ...)
    when the file cannot be written; the temporary file is removed and an earlier
    checkpoint under ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A Python file object (not a path) so that torch surfaces the OSError (ENOSPC...)
        # instead of its own "unexpected pos" message.
        with atomic_open(path, "wb") as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot save checkpoint ({os_cause(exc)})") from None
    return path


# What torch.load raises on a damaged file that passed the CRC32 check: its zip reader's
# RuntimeError, or, in the legacy (pre-zip) format that has no checksums, the unpickler
# failing wherever the damage lands (a cut or a flipped bit: each of these seen).
_LOAD_ERRORS = (
    EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError,
    TypeError, AssertionError, struct.error,
)  # fmt: skip


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint (or a plain state dict) with ``torch.load(weights_only=True)``.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (one line)
    for a folder or FIFO, an empty, truncated or damaged file (a record whose bytes fail
    their CRC32: :func:`verify_checkpoint`), or one whose pickle needs more than tensors,
    numbers and strings (it would have to run code to load: refused, never run).
    """
    path = Path(path)
    why = not_a_file(path)
    if why == "no such file":
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if why is not None:
        raise CheckpointError(f"{path}: {why}, not a checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    verify_checkpoint(path)
    try:
        with warnings.catch_warnings():
            # A foreign pickle protocol only means the file was not written by torch.save.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: {_unsafe_reason(str(exc))}") from None
    except _LOAD_ERRORS as exc:
        raise CheckpointError(
            f"{path}: not a torch checkpoint, or truncated/damaged ({_first_line(exc)})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: holds a {type(state).__name__}; expected a state dict or checkpoint dict"
        )
    return state


# What zipfile raises on a damaged archive (a flipped bit can land in any header field;
# one in a record's method flag has zlib inflate stored bytes).
_ZIP_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError,
    NotImplementedError, struct.error, zlib.error,
)  # fmt: skip


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check the CRC32 of every record in a checkpoint's zip; :class:`CheckpointError`
    naming the file and the record when one fails (torch reads them unchecked).

    A file that is not a zip (torch's legacy format, or damage to the zip's directory) is
    left to ``torch.load``, which refuses what it cannot read.
    """
    path = Path(path)
    try:
        # is_zipfile itself raises on some damage to the end of the zip (BadZipFile).
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every record, checks its CRC32
    except _ZIP_ERRORS as exc:
        raise CheckpointError(
            f"{path}: damaged checkpoint (its zip does not hold together: "
            f"{_first_line(exc)}); use another checkpoint (an epoch_NNNN.pt, best.pt)"
        ) from None
    if bad is not None:
        raise CheckpointError(
            f"{path}: damaged checkpoint: record {bad} fails its CRC32 check (the file "
            "changed after it was written); use another checkpoint (an epoch_NNNN.pt, best.pt)"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # torch's messages run on for sentences; the first says what failed.
    return text.splitlines()[0].split(". ")[0][:200] if text else type(exc).__name__


def last_line(exc: BaseException) -> str:
    """The last line of ``exc``'s message: where ``load_state_dict`` names the mismatch
    (its first line only says that loading failed)."""
    text = str(exc).strip()
    return text.splitlines()[-1].strip() if text else type(exc).__name__


def _unsafe_reason(message: str) -> str:
    """torch's multi-paragraph weights_only error, as one clause naming what was refused."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return (
            f"refused: loading it would call {found.group(1)}; a checkpoint may hold only "
            "tensors, numbers and strings (nothing in it may run code)"
        )
    detail = re.search(r"(Unsupported [^\n.]+)", message)
    return (
        "not a torch checkpoint the safe loader accepts"
        + (f" ({detail.group(1).strip()})" if detail else "")
        + "; refused, nothing in it was run"
    )


# ----------------------------------------------------------------------------- state dicts

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
