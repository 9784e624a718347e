"""Kinetics-400/600/700 as they ship: annotation CSVs and clips named by YouTube id and times.

    ROOT/annotations/{train,val|validate,test}.csv  (label,youtube_id,time_start,time_end,...)
    ROOT/{train,val}/<youtube_id>_<start:06d>_<end:06d>.mp4          (flat)
    ROOT/{train,val}/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4  (or in label folders)

Labels index the sorted union of the class names of every annotation CSV that ships with
a ``label`` column (train, val/validate, test), the same list for every split: a class
missing from one split's annotations must not shift the labels of the others.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from vicmae_data.sources.items import MISSING, Found, Item, Layout, LayoutError
from vicmae_data.sources.scan import Paths, Scanner, csv_rows

if TYPE_CHECKING:
    from vicmae_data.synth.twin import SynthSummary, TwinRequest

KINETICS_CSVS = ("train.csv", "val.csv", "validate.csv", "test.csv")

# A few real class names of each release; the releases differ in class count and names only.
KINETICS_CLASSES: dict[str, tuple[str, ...]] = {
    "kinetics400": (
        "abseiling",
        "air drumming",
        "juggling balls",
        "playing guitar",
        "riding a bike",
    ),
    "kinetics600": (
        "abseiling",
        "air drumming",
        "passing American football (in game)",
        "playing guitar",
        "riding a bike",
        "tying necktie",
    ),
    "kinetics700": (
        "abseiling",
        "air drumming",
        "juggling balls",
        "petting animal (not cat)",
        "playing guitar",
        "riding a bike",
        "tying necktie",
    ),
}


def _kinetics_classes(annotations: Path) -> set[str]:
    """The class names of every shipped annotation CSV that has a ``label`` column."""
    classes: set[str] = set()
    for name in KINETICS_CSVS:
        path = annotations / name
        if not path.is_file():
            continue
        rows = csv_rows(path)
        header = next(rows, (0, []))[1]
        if "label" not in header:
            continue  # Kinetics-700's test.csv ships without labels
        col = header.index("label")
        classes.update(row[col] for _, row in rows if col < len(row) and row[col])
    return classes


def read_kinetics(root: Path, split: str, scan: Scanner, variant: str | None = None) -> Found:
    """List ``split`` of a Kinetics release under ``root``."""
    csv_path = root / "annotations" / f"{split}.csv"
    if (
        split == "val"
        and not csv_path.exists()
        and (root / "annotations" / "validate.csv").exists()
    ):
        csv_path = root / "annotations" / "validate.csv"
    rows = csv_rows(csv_path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise LayoutError(f"annotation file {csv_path} is empty") from None
    need = ("label", "youtube_id", "time_start", "time_end")
    if any(c not in header for c in need):
        raise LayoutError(
            f"annotation file {csv_path} has header {','.join(header)!r}; "
            f"expected columns {','.join(need)}"
        )
    col = [header.index(c) for c in need]
    annotated: dict[str, str] = {}  # clip stem -> label
    for n, row in rows:
        try:
            label, yid, start, end = (row[i] for i in col)
            stem = f"{yid}_{int(float(start)):06d}_{int(float(end)):06d}"
        except (IndexError, ValueError):
            raise LayoutError(
                f"annotation file {csv_path} line {n} is malformed: {','.join(row)!r}"
            ) from None
        if not label or not yid:
            raise LayoutError(f"annotation file {csv_path} line {n} has an empty label or id")
        annotated[stem] = label
    classes = sorted(_kinetics_classes(root / "annotations") | set(annotated.values()))
    index = {c: i for i, c in enumerate(classes)}

    # One listing of <split>/ and of each <split>/<label>/: clip stem -> relative path.
    split_dir = root / split
    top_files, subdirs = scan(split_dir)
    on_disk: dict[str, str] = {}
    for name in top_files:
        on_disk.setdefault(os.path.splitext(name)[0], f"{split}/{name}")
    for d in sorted(subdirs):
        for name in scan(split_dir / d)[0]:
            stem = os.path.splitext(name)[0]
            # A clip found in its own label's folder wins over a copy elsewhere.
            if stem not in on_disk or annotated.get(stem) == d:
                on_disk[stem] = f"{split}/{d}/{name}"
    nested = bool(subdirs)
    items, missing = [], []
    paths = Paths(root)
    for stem, label in annotated.items():
        rel = on_disk.get(stem)
        if rel is None:
            guess = f"{split}/{label}/{stem}.mp4" if nested else f"{split}/{stem}.mp4"
            missing.append({"path": str(root / guess), "reason": MISSING})
        else:
            items.append(Item(paths(rel), index[label], label, rel))
    return Found(items, classes, missing)


def _csv_field(value: str) -> str:
    # Kinetics CSVs quote labels with spaces; csv.writer's minimal quoting would not.
    if any(c in value for c in ' ,"'):
        return '"' + value.replace('"', '""') + '"'
    return value


def kinetics_twin(req: TwinRequest) -> SynthSummary:
    """Annotation CSVs of the requested splits and their clips (``flat``: in ``<split>/``
    instead of ``<split>/<label>/``; default flat for kinetics600 only, so both exist)."""
    from vicmae_data.synth.twin import SynthSummary, absent, video_item, youtube_id

    out, rng, layout = req.out, req.rng, req.layout
    flat = layout == "kinetics600" if req.flat is None else req.flat
    classes = KINETICS_CLASSES[layout]
    with_cc = layout == "kinetics700"  # later releases add an `is_cc` column
    (out / "annotations").mkdir(exist_ok=True)
    items = []
    for split in req.splits:
        header = "label,youtube_id,time_start,time_end,split" + (",is_cc" if with_cc else "")
        rows = [header]
        for i in range(req.count + req.missing):
            label = i % len(classes)
            name = classes[label]
            start = int(rng.integers(0, 300))
            file = f"{youtube_id(rng)}_{start:06d}_{start + 10:06d}.mp4"
            rel = f"{split}/{file}" if flat else f"{split}/{name}/{file}"
            row = f"{_csv_field(name)},{file[:11]},{start},{start + 10},{split}"
            rows.append(row + (f",{int(rng.integers(0, 2))}" if with_cc else ""))
            if i < req.count:
                items.append(
                    video_item(out / rel, split, rel, label, name, i, rng, render=req.render)
                )
            else:
                items.append(absent(split, rel, label, name))
        (out / "annotations" / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return SynthSummary(layout, out, classes, tuple(items))


def _kinetics(name: str, title: str) -> Layout:
    return Layout(
        name=name,
        title=title,
        media="video",
        splits=("train", "val"),
        classes_from="the sorted class names of every annotation CSV with a label column",
        files=(
            "annotations/{train,val|validate,test}.csv",
            "{train,val}/[<label>/]<youtube_id>_<start>_<end>.mp4",
        ),
        read=read_kinetics,
        twin=kinetics_twin,
    )


LAYOUTS: tuple[Layout, ...] = (
    _kinetics("kinetics400", "Kinetics-400"),
    _kinetics("kinetics600", "Kinetics-600"),
    _kinetics("kinetics700", "Kinetics-700"),
)
