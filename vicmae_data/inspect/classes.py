"""What the labels of a .beton mean, and whether two files agree on it.

A linear probe or a fine-tune trains on one file and evaluates on another: label 3 must
name the same class in both, or every accuracy is silently wrong. Conversion stores the
dataset's one class list in every split's file (:mod:`vicmae_data.format.manifest`);
:func:`check_same_classes` compares them before anything trains::

    from vicmae_data import check_same_classes, class_map

    check_same_classes("train.beton", "val.beton")  # ClassMapError (one line) if they differ
    class_map("train.beton")["abseiling"]  # -> 0
    require_labels("ssv2-test.beton")  # UnlabelledError: SSv2's test split ships no labels
    check_labels("train.beton")  # -> 400; LabelError naming the first sample out of range

Labels sit outside the frames' CRC32: :func:`check_labels` is what a job runs before it
sizes a classifier head from a file (a label of 1,000,000 would make a 1,000,001-way head).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from vicmae_data.format.beton import BetonError, BetonFile

log = logging.getLogger(__name__)


class ClassMapError(ValueError):
    """Two files' labels mean different classes (the message names the first difference)."""


class UnlabelledError(ValueError):
    """A file holds samples of a split that ships without labels (label -1): nothing can
    be trained or scored on them."""


class LabelError(ValueError):
    """A sample's label is not one of its file's classes (the message names the first)."""


def check_labels(path: str | os.PathLike) -> int:
    """The number of classes of ``path``, after checking every sample's label against it.

    The classes are the list stored in the file; a label outside ``0..classes-1`` is a
    :class:`LabelError` naming the first such sample (one line), a split that ships
    without labels an :class:`UnlabelledError` (:func:`require_labels`). A file converted
    before class lists were stored has only its labels: a negative one is refused, and
    the count is the largest label + 1 (with a warning that nothing more can be checked).
    """
    require_labels(path)
    beton = BetonFile(path)
    labels = np.asarray(beton.labels, dtype=np.int64)
    if len(labels) == 0:
        raise LabelError(f"{beton.path}: the file holds no samples")
    manifest = beton.manifest
    classes = manifest.num_classes if manifest is not None else None
    bad = labels < 0 if classes is None else (labels < 0) | (labels >= classes)
    if bad.any():
        i = int(np.argmax(bad))
        where = "below 0" if classes is None else f"not one of its {classes} classes"
        raise LabelError(
            f"{beton.path}: sample {i} ({_source(beton, i)}) has label {int(labels[i])}, "
            f"{where}; {int(bad.sum())} such sample(s): `vicmae-data verify` lists them"
        )
    if classes is None:
        classes = int(labels.max()) + 1
        log.warning(
            "%s stores no class list (converted before lists were stored): %d classes "
            "from its largest label, which nothing checks", beton.path, classes,
        )  # fmt: skip
    return classes


def _source(beton: BetonFile, index: int) -> str:
    try:
        return str(beton.meta(index).get("source", "?"))
    except BetonError:  # a damaged meta must not hide the label being reported
        return "?"


def require_labels(path: str | os.PathLike) -> None:
    """Raise :class:`UnlabelledError` (one line) if ``path`` holds samples of a split that
    ships without labels (Something-Something v2's test split): a probe, a fine-tune or an
    evaluation on it would learn from, or score against, label -1. Pretraining may use
    such a file; it ignores labels."""
    beton = BetonFile(path)
    manifest = beton.manifest
    if manifest is None or not manifest.unlabelled:
        return
    n = int((~manifest.labelled_flags(len(beton))).sum())
    splits = sorted(
        {f"{s.get('dataset', '?')} {s.get('split', '?')}" for s in manifest.sources
         if s.get("labelled", True) is False}
    )  # fmt: skip
    raise UnlabelledError(
        f"{beton.path} holds {n} unlabelled samples ({', '.join(splits)}: the split ships "
        "without labels, stored as label -1); train and evaluate on a labelled split"
    )


def class_names(path: str | os.PathLike) -> dict[int, str]:
    """Label -> class name of ``path``: every class of the dataset when the file stores its
    class list, else (files converted before class lists were stored) the classes its
    samples use."""
    return BetonFile(path).class_names()


def class_map(path: str | os.PathLike) -> dict[str, int]:
    """Class name -> label of ``path`` (a name that two merged datasets share maps to its
    first label)."""
    out: dict[str, int] = {}
    for label, name in class_names(path).items():
        out.setdefault(name, label)
    return out


def check_same_classes(a: str | os.PathLike, b: str | os.PathLike) -> None:
    """Raise :class:`ClassMapError` unless every label means the same class in ``a`` and
    ``b``.

    With stored class lists on both sides the lists must be equal. When either file has
    none (converted before class lists were stored), only the labels both files use can
    be compared; they must name the same class.
    """
    fa, fb = BetonFile(a), BetonFile(b)
    na, nb = fa.class_names(), fb.class_names()
    complete = fa.manifest is not None and fb.manifest is not None
    labels = sorted(na.keys() | nb.keys()) if complete else sorted(na.keys() & nb.keys())
    for label in labels:
        if na.get(label) != nb.get(label):
            raise ClassMapError(
                f"{fa.path} and {fb.path} label their classes differently: label {label} is "
                f"{_name(na.get(label))} in {fa.path.name} but {_name(nb.get(label))} in "
                f"{fb.path.name} ({len(na)} vs {len(nb)} classes); convert both splits with "
                "this version of vicmae-data, which uses the dataset's one class list"
            )


def _name(name: str | None) -> str:
    return "absent" if name is None else repr(name)
