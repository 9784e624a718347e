"""What the labels of a .beton mean, and whether two files agree on it.

A linear probe or a fine-tune trains on one file and evaluates on another: label 3 must
name the same class in both, or every accuracy is silently wrong. Conversion stores the
dataset's one class list in every split's file (:mod:`vicmae_data.format.manifest`);
:func:`check_same_classes` compares them before anything trains::

    from vicmae_data import check_same_classes, class_map

    check_same_classes("train.beton", "val.beton")  # ClassMapError (one line) if they differ
    class_map("train.beton")["abseiling"]  # -> 0
    require_labels("ssv2-test.beton")  # UnlabelledError: SSv2's test split ships no labels
"""

from __future__ import annotations

import os

from vicmae_data.format.beton import BetonFile


class ClassMapError(ValueError):
    """Two files' labels mean different classes (the message names the first difference)."""


class UnlabelledError(ValueError):
    """A file holds samples of a split that ships without labels (label -1): nothing can
    be trained or scored on them."""


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
