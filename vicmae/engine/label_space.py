"""The classes an evaluation's head covers: every training file's, offset as the loader does.

Training on several files (``--beton k400.beton --beton in1k.beton``), the loader offsets
each dataset's labels past the previous one's (:mod:`vicmae_data.format.labels`, the same
plan as ``vicmae-data merge``): label 3 of the second file reaches the head as 403. The
head must cover all of them, and a validation file must be scored with the offset of the
training file whose classes it shares, not with its own labels: :class:`LabelSpace` holds
the plan (each training file's path, offset and class list), the jobs write it into the
run (``RUN/classifier.json``, :func:`vicmae.engine.evaluation.write_classifier_record`) and
every evaluation checks a file against it (:meth:`LabelSpace.offset_for`).

Example::

    space = label_space(["k400.beton", "in1k.beton"])
    space.num_classes                   # 1400
    space.offset_for("in1k-val.beton")  # 400; ConfigError for a file of other classes
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vicmae.config import ConfigError
from vicmae.engine.run_folder import CLASSIFIER_RECORD, write_json


@dataclass(frozen=True)
class FileLabels:
    """One training file: where its labels land in the head, and what they name."""

    path: str
    offset: int
    classes: dict[int, str]  # label -> class name (the stored list, or the labels used)


@dataclass(frozen=True)
class LabelSpace:
    """The head's classes: ``num_classes`` wide, each training file's at its offset."""

    files: tuple[FileLabels, ...]
    num_classes: int

    def offset_for(self, path: str | os.PathLike) -> int:
        """The offset to add to ``path``'s labels: that of the training file whose class
        list it has. ConfigError (one line) when no training file has its classes, or one
        of its labels falls outside the head."""
        from vicmae_data import BetonFile, check_labels, class_names

        check_labels(path)  # LabelError / UnlabelledError (one line) first
        names = class_names(path)
        for f in self.files:
            if _same_classes(f.classes, names):
                top = f.offset + int(BetonFile(path).labels.max())
                if top >= self.num_classes:
                    raise ConfigError(
                        f"{path}: label {top - f.offset} is past the {self.num_classes} "
                        f"classes the model was trained on ({f.path})"
                    )
                return f.offset
        trained = ", ".join(f"{os.path.basename(f.path)} ({len(f.classes)})" for f in self.files)
        raise ConfigError(
            f"{path}: its {len(names)} classes are not those of any file the model was "
            f"trained on ({trained}); evaluate on a split of a dataset it was trained on"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``{"num_classes", "files": [{"path", "offset", "classes"}]}``."""
        files = [
            {
                "path": f.path,
                "offset": f.offset,
                "classes": {str(k): v for k, v in f.classes.items()},
            }
            for f in self.files
        ]
        return {"num_classes": self.num_classes, "files": files}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSpace:
        files = tuple(
            FileLabels(f["path"], int(f["offset"]), {int(k): v for k, v in f["classes"].items()})
            for f in data["files"]
        )
        return cls(files, int(data["num_classes"]))


def _same_classes(a: dict[int, str], b: dict[int, str]) -> bool:
    """Equal class lists; where one side knows only the labels it uses (a file converted
    before class lists were stored), every label both know names the same class."""
    if a == b:
        return True
    shared = a.keys() & b.keys()
    return (
        bool(shared)
        and (a.keys() <= b.keys() or b.keys() <= a.keys())
        and all(a[k] == b[k] for k in shared)
    )


def label_space(paths: Sequence[str | os.PathLike]) -> LabelSpace:
    """The label plan ``make_loader(paths)`` uses (``relabel="auto"``), as a :class:`LabelSpace`
    whose width covers each file's stored class list (:func:`vicmae_data.check_labels`)."""
    from vicmae_data import check_labels
    from vicmae_data.format.labels import plan_labels

    # Every label against its file's class list first (LabelError / UnlabelledError, one
    # line naming the sample): no head is sized from a damaged label.
    sizes = [check_labels(p) for p in paths]
    plan = plan_labels([str(p) for p in paths])
    files = tuple(
        FileLabels(s.path, o, dict(s.classes))
        for s, o in zip(plan.summaries, plan.offsets, strict=True)
    )
    top = max(o + n for o, n in zip(plan.offsets, sizes, strict=True))
    return LabelSpace(files, top)


def write_record(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """``RUN/classifier.json``: what an evaluation needs to rebuild the trained classifier
    from a checkpoint of the run (architecture, input, head, the :class:`LabelSpace`)."""
    write_json(Path(run_dir) / CLASSIFIER_RECORD, record)


def read_record(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The ``classifier.json`` beside ``checkpoint`` (ConfigError, one line, when absent)."""
    path = Path(checkpoint).parent / CLASSIFIER_RECORD
    if not path.is_file():
        raise ConfigError(
            f"{checkpoint}: no {CLASSIFIER_RECORD} beside it; evaluate a checkpoint in the run "
            "folder of a `vicmae train finetune` or `linprobe` run (they write it at start)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
