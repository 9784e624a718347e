"""ImageNet-1k as it ships (ILSVRC2012, or Kaggle's copy of it).

    ROOT/LOC_synset_mapping.txt             <wnid> <names>  (the class order, and titles)
    ROOT/LOC_val_solution.csv               ImageId,PredictionString  (flat val only)
    ROOT/[ILSVRC/Data/CLS-LOC/]train/<wnid>/<wnid>_<n>.JPEG
    ROOT/[ILSVRC/Data/CLS-LOC/]val/ILSVRC2012_val_<n>.JPEG   (or val/<wnid>/...)

Labels: the line order of ``LOC_synset_mapping.txt`` (whose names become the classes'
titles) when present, else the sorted wnid folders of ``train/`` (of the split if there is
no ``train/``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from vicmae_data.sources.items import MISSING, Found, Item, Layout, LayoutError
from vicmae_data.sources.scan import Paths, Scanner, csv_rows, text_lines

if TYPE_CHECKING:
    from vicmae_data.synth.twin import SynthSummary, TwinRequest

log = logging.getLogger(__name__)

IMAGENET_SYNSETS: tuple[tuple[str, str], ...] = (
    ("n01440764", "tench, Tinca tinca"),
    ("n01443537", "goldfish, Carassius auratus"),
    ("n01484850", "great white shark, white shark, man-eater, man-eating shark"),
    ("n01491361", "tiger shark, Galeocerdo cuvieri"),
)
# ImageNet's real quirks, put on the first train items: a PNG, a CMYK and a grey JPEG, all
# named `.JPEG`.
_IMAGENET_QUIRKS: tuple[tuple[str, str], ...] = (("PNG", "RGB"), ("JPEG", "CMYK"), ("JPEG", "L"))


def read_imagenet(root: Path, split: str, scan: Scanner, variant: str | None = None) -> Found:
    """List ``split`` of ImageNet under ``root``."""
    # Kaggle's copy nests the images under ILSVRC/Data/CLS-LOC/ beside the LOC_* files.
    base = root / "ILSVRC" / "Data" / "CLS-LOC"
    prefix = "ILSVRC/Data/CLS-LOC/" if base.is_dir() else ""
    base = base if prefix else root
    mapping = root / "LOC_synset_mapping.txt"
    classes: list[str] | None = None
    titles: list[str] = []
    if mapping.exists():
        classes = []
        for n, row in text_lines(mapping):
            wnid, _, title = row.partition(" ")
            if not wnid.startswith("n"):
                raise LayoutError(f"{mapping} line {n} does not start with a wnid: {row!r}")
            classes.append(wnid)
            titles.append(title.strip())

    split_dir = base / split
    if not split_dir.is_dir():
        raise LayoutError(f"ImageNet {split} folder {split_dir} does not exist")
    files, wnid_dirs = scan(split_dir)
    items: list[tuple[str, str]] = []  # (relative path, wnid)
    missing: list[dict] = []
    if wnid_dirs:  # train, or val sorted into class folders
        for wnid in sorted(wnid_dirs):
            items += [(f"{prefix}{split}/{wnid}/{f}", wnid) for f in scan(split_dir / wnid)[0]]
    else:  # flat val with LOC_val_solution.csv
        solution = root / "LOC_val_solution.csv"
        by_stem = {os.path.splitext(f)[0]: f for f in files}
        for n, row in csv_rows(solution):
            if n == 1 and row[0] == "ImageId":
                continue
            if len(row) < 2 or not row[1]:
                raise LayoutError(
                    f"annotation file {solution} line {n} is malformed: {','.join(row)!r}"
                )
            image_id, wnid = row[0], row[1].split()[0]
            if image_id in by_stem:
                items.append((f"{prefix}{split}/{by_stem.pop(image_id)}", wnid))
            else:
                missing.append({"path": str(split_dir / f"{image_id}.JPEG"), "reason": MISSING})
        if by_stem:
            log.warning(
                "%d images in %s are not in %s; left out", len(by_stem), split_dir, solution.name
            )
    if classes is None:
        # No synset list: the class folders of train/ are the class list of every split.
        train_dir = base / "train"
        if split != "train" and train_dir.is_dir():
            with os.scandir(train_dir) as entries:
                classes = sorted(e.name for e in entries if e.is_dir() and e.name[0] != ".")
        else:
            classes = sorted({w for _, w in items})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({w for _, w in items} - index.keys())
    if unknown:
        raise LayoutError(
            f"{len(unknown)} wnids in {split_dir} are not in {mapping}, e.g. {unknown[0]}"
        )
    paths = Paths(root)
    found = [Item(paths(rel), index[w], w, rel) for rel, w in items]
    return Found(found, classes, missing, titles)


def imagenet_twin(req: TwinRequest) -> SynthSummary:
    """The synset mapping, train in wnid folders with ImageNet's odd files, and val flat
    with ``LOC_val_solution.csv`` (``flat=False``: in wnid folders)."""
    from vicmae_data.synth.twin import IMAGE_SIZES, SynthSummary, image_item

    out, rng = req.out, req.rng
    flat_val = True if req.flat is None else req.flat
    wnids = tuple(w for w, _ in sorted(IMAGENET_SYNSETS))
    (out / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {names}\n" for w, names in sorted(IMAGENET_SYNSETS))
    )
    items = []
    for split in req.splits:
        counters: Counter[str] = Counter()
        solution = ["ImageId,PredictionString"]
        for i in range(req.count):
            label = i % len(wnids)
            wnid = wnids[label]
            fmt, mode = _IMAGENET_QUIRKS[i] if split == "train" and i < 3 else ("JPEG", "RGB")
            if split == "train":
                counters[wnid] += 1
                rel = f"train/{wnid}/{wnid}_{1000 + counters[wnid] * 7}.JPEG"
            else:
                image_id = f"ILSVRC2012_val_{i + 1:08d}"
                rel = f"val/{image_id}.JPEG" if flat_val else f"val/{wnid}/{image_id}.JPEG"
                w, h = IMAGE_SIZES[i % len(IMAGE_SIZES)]
                solution.append(
                    f"{image_id},{wnid} 1 1 {w - 2} {h - 2} {wnid} 3 2 {w - 4} {h - 3} "
                )
            items.append(
                image_item(out / rel, split, rel, label, wnid, i, rng, fmt, mode, req.render)
            )
        if split == "val" and flat_val:
            (out / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    return SynthSummary("imagenet", out, wnids, tuple(items))


LAYOUT = Layout(
    name="imagenet",
    title="ImageNet-1k, ILSVRC2012 or Kaggle's copy",
    media="image",
    splits=("train", "val"),
    classes_from="the line order of LOC_synset_mapping.txt (else the sorted wnid folders)",
    files=(
        "LOC_synset_mapping.txt, LOC_val_solution.csv (flat val)",
        "[ILSVRC/Data/CLS-LOC/]train/<wnid>/<file>.JPEG",
        "[ILSVRC/Data/CLS-LOC/]val/<file>.JPEG (or val/<wnid>/<file>.JPEG)",
    ),
    read=read_imagenet,
    twin=imagenet_twin,
)
