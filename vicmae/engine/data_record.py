"""What a run trained on, and whether a resume would train on the same: ``RUN/data.json``.

A run's config names its .beton files by path; the files behind a path can change (a
re-conversion, another dataset copied over it, the val split in place of the train split).
Resuming on other data continues the step count, the schedules and the checkpoints of a
run that never saw it. So every run records, for each training file and the validation
file, what :func:`vicmae_data.inspect.identity.beton_identity` says (size, sample count,
fingerprint of the tables, class list), and ``--resume`` compares::

    record = data_record(cfg)                      # what cfg's files are now
    changes = data_changes(read_record(run_dir), record)
    # ["data.betons[0] sw.beton: 24 -> 960 samples", ...]: refused unless --allow-changes

A resume that is allowed to change the data keeps the earlier records (``earlier``, each
with the step it ended at), so the run folder still says what every step trained on.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vicmae.config import ConfigError, JobConfig, parse_beton

log = logging.getLogger("vicmae")

DATA_RECORD = "data.json"


class DataChangedError(ConfigError):
    """``--resume`` would train on other data than the run did (the message lists it)."""


def data_record(cfg: JobConfig) -> dict[str, Any]:
    """``{"data.betons": [identity, ...], "data.val_beton": identity or None}`` of ``cfg``."""
    from vicmae_data.inspect.identity import beton_identity

    val = getattr(cfg.data, "val_beton", None)
    return {
        "data.betons": [beton_identity(parse_beton(b)[0]).to_json() for b in cfg.data.betons],
        "data.val_beton": beton_identity(val).to_json() if val else None,
    }


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The record a run left in ``run_dir`` (None: a run from before records, or none)."""
    path = run_dir / DATA_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataChangedError(
            f"{path}: unreadable ({exc}); the run's data cannot be checked"
        ) from None
    if not isinstance(record, dict) or "data.betons" not in record:
        raise DataChangedError(f"{path}: not a record of a run's data")
    return record


def data_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One line per difference between two records: ``"data.betons[0] a.beton: 24 -> 960
    samples"`` ([] when every file is the one the run trained on)."""
    from vicmae_data.inspect.identity import BetonIdentity

    lines = []
    before, after = saved["data.betons"], now["data.betons"]
    if len(before) != len(after):
        lines.append(f"data.betons: {len(before)} -> {len(after)} files")
    pairs = [
        (f"data.betons[{i}]", a, b) for i, (a, b) in enumerate(zip(before, after, strict=False))
    ]
    pairs.append(("data.val_beton", saved.get("data.val_beton"), now.get("data.val_beton")))
    for key, a, b in pairs:
        if a is None or b is None:
            if a != b:
                lines.append(f"{key}: {_path(a)} -> {_path(b)}")
            continue
        b_id = BetonIdentity.from_json(b)
        for change in b_id.differences(BetonIdentity.from_json(a)):
            lines.append(f"{key} {Path(b_id.path).name}: {change}")
    return lines


def _path(entry: dict[str, Any] | None) -> str:
    return "none" if entry is None else str(entry["path"])


def check_data(
    checkpoint: Path, now: dict[str, Any], step: int, allow_changes: bool
) -> dict[str, Any]:
    """The record to keep for a resume of ``checkpoint`` (at ``step``) on ``now``'s files.

    Raises :class:`DataChangedError` listing every difference from the record beside the
    checkpoint, unless ``allow_changes`` (then they are logged, and the old record is kept
    under ``earlier``). A checkpoint without a record (a run from before records) is
    resumed with a warning.
    """
    saved = read_record(checkpoint.parent)
    if saved is None:
        log.warning(
            "%s: no %s beside it (a run from before data records): the data it trained on "
            "cannot be checked", checkpoint, DATA_RECORD,
        )  # fmt: skip
        return now
    changes = data_changes(saved, now)
    if not changes:
        return dict(now, earlier=saved.get("earlier", []))
    if not allow_changes:
        listed = "".join(f"\n  {line}" for line in changes)
        raise DataChangedError(
            f"--resume {checkpoint}: the data differs from what the run trained on "
            f"({checkpoint.parent / DATA_RECORD}):{listed}\nResume on the same files, or "
            "pass --allow-changes to continue the run on these"
        )
    log.warning("resuming on changed data: %s", "; ".join(changes))
    earlier = {k: v for k, v in saved.items() if k != "earlier"}
    return dict(now, earlier=[*saved.get("earlier", []), dict(earlier, until_step=step)])


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``RUN/data.json`` atomically (the caller turns an OSError into its message)."""
    from vicmae_data.atomic import write_text_atomic

    return write_text_atomic(run_dir / DATA_RECORD, json.dumps(record, indent=1) + "\n")
