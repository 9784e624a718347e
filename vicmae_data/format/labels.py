"""Label spaces of several .beton files: which files share class indices, and offsets.

Shards of one dataset share a label space and keep their labels. Different datasets (say
ImageNet and Kinetics) would collide (label 0 = "tench" and "abseiling"), so ``"auto"``
groups the files into label spaces and shifts each group's labels past the previous
group's. Two files share a label space when their ``dataset`` names are the same and no
label has two class names. ``merge`` and ``make_loader`` both use this, so a merged file
and the same files mixed by the loader label every sample alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from vicmae_data.format.beton import BetonError, BetonFile

RelabelMode = Literal["auto", "offset", "keep"]
RELABEL_MODES: tuple[str, ...] = ("auto", "offset", "keep")


@dataclass(frozen=True)
class InputSummary:
    path: str
    length: int  # every sample, damaged rows included
    classes: dict[int, str]  # from the first sample of every label
    datasets: frozenset[str]
    max_label: int
    max_sample_bytes: int


def summarise(path: str) -> InputSummary:
    beton = BetonFile(path)
    # Damaged rows (BetonFile.damaged_rows) are read by nobody: their metas and sizes
    # say nothing, and the reader leaves them out.
    good = np.ones(len(beton), dtype=bool)
    good[list(beton.damaged_rows())] = False
    if len(beton) and not good.any():
        raise BetonError(f"{path}: every sample's table row is damaged")
    labels = np.asarray(beton.labels, dtype=np.int64)[good]
    if len(labels) == 0:
        raise BetonError(f"{path}: the file holds no samples")
    uniq, first = np.unique(labels, return_index=True)
    first = np.flatnonzero(good)[first]
    classes: dict[int, str] = {}
    datasets: set[str] = set()
    for label, i in zip(uniq, first, strict=True):
        meta = beton.meta(int(i))
        if label >= 0:  # -1: a split shipped without labels names no class
            classes[int(label)] = str(meta.get("class_name", int(label)))
        datasets.add(str(meta.get("dataset", "")))
    if beton.manifest is not None:  # the whole class list, also the classes no sample uses
        classes = beton.class_names()
    return InputSummary(
        path=path,
        length=len(beton),
        classes=classes,
        datasets=frozenset(datasets),
        max_label=max(int(uniq.max()), len(classes) - 1),
        max_sample_bytes=int(np.asarray(beton.frames_meta["size"])[good].max()),
    )


def _compatible(a: dict[int, str], b: dict[int, str]) -> bool:
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def label_spaces(summaries: Sequence[InputSummary]) -> list[int]:
    """Group id per input: same datasets and no label with two names -> same group."""
    groups: list[tuple[frozenset[str], dict[int, str]]] = []
    ids: list[int] = []
    for s in summaries:
        for g, (datasets, classes) in enumerate(groups):
            if datasets == s.datasets and _compatible(classes, s.classes):
                classes.update(s.classes)
                ids.append(g)
                break
        else:
            groups.append((s.datasets, dict(s.classes)))
            ids.append(len(groups) - 1)
    return ids


@dataclass(frozen=True)
class LabelPlan:
    """``label + offsets[k]`` for file ``k``; ``notes`` say what was done and why."""

    summaries: tuple[InputSummary, ...]
    offsets: tuple[int, ...]
    relabelled: bool
    notes: tuple[str, ...] = ()


def plan_labels(paths: Sequence[str | os.PathLike], relabel: RelabelMode = "auto") -> LabelPlan:
    """The label offset of every file (reads only the first sample of each class).

    ``relabel``: ``"auto"`` (files of one dataset keep their labels, different datasets are
    offset), ``"offset"`` (every file past the previous one) or ``"keep"`` (never change).
    """
    if relabel not in RELABEL_MODES:
        raise ValueError(f"relabel must be one of {RELABEL_MODES}, not {relabel!r}")
    if not paths:
        raise ValueError("no files")
    summaries = [summarise(str(p)) for p in paths]
    notes: list[str] = []
    if relabel == "offset":
        groups = list(range(len(summaries)))
    else:
        groups = label_spaces(summaries)
        if relabel == "keep" and len(set(groups)) > 1:
            notes.append(
                "relabel 'keep': the files' class lists differ, so one label now names "
                "different classes in different samples"
            )
            groups = [0] * len(summaries)

    # Each label space starts after the largest label of the ones before it.
    starts: dict[int, int] = {}
    next_start = 0
    for g in sorted(set(groups)):
        starts[g] = next_start
        next_start += 1 + max(
            s.max_label for s, gi in zip(summaries, groups, strict=True) if gi == g
        )
    offsets = tuple(starts[g] for g in groups)
    relabelled = len(set(groups)) > 1
    if relabelled:
        described = ", ".join(
            f"{Path(s.path).name} (+{o}, {len(s.classes)} classes, "
            f"{'/'.join(sorted(s.datasets)) or '?'})"
            for s, o in zip(summaries, offsets, strict=True)
        )
        notes.append(
            f"the files hold different class lists; labels are offset per file: {described}"
        )
    return LabelPlan(tuple(summaries), offsets, relabelled, tuple(notes))
