"""Moments in Time as it ships: a category index file and one CSV per split.

    ROOT/moments_categories.txt      name,index
    ROOT/trainingSet.csv             <category>/<file>.mp4,<category>,<agreement>,<votes>
    ROOT/validationSet.csv
    ROOT/{training,validation}/<category>/<file>.mp4

Labels are the indices ``moments_categories.txt`` gives (not the sorted names).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vicmae_data.sources.items import Found, Layout, LayoutError
from vicmae_data.sources.scan import AnnotatedFiles, Scanner, csv_rows, indexed_names

if TYPE_CHECKING:
    from vicmae_data.synth.twin import SynthSummary, TwinRequest

# The media folder and annotation CSV of each split.
FOLDERS = {"train": ("training", "trainingSet.csv"), "val": ("validation", "validationSet.csv")}
# Moments in Time: (name, index). The indices are deliberately not alphabetical, so a
# reader that sorts names instead of reading `moments_categories.txt` gives wrong labels.
MIT_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("applauding", 2),
    ("barking", 0),
    ("bicycling", 4),
    ("clapping", 1),
    ("running", 3),
)


def _categories(path: Path):
    for n, row in csv_rows(path):
        try:
            yield f"line {n}", row[0], int(row[1])
        except (IndexError, ValueError):
            raise LayoutError(f"{path} line {n} is not 'name,index': {','.join(row)!r}") from None


def read_mit(root: Path, split: str, scan: Scanner, variant: str | None = None) -> Found:
    """List ``split`` of Moments in Time under ``root``."""
    cat_path = root / "moments_categories.txt"
    classes = indexed_names(_categories(cat_path), cat_path)
    index = {c: i for i, c in enumerate(classes)}

    media, csv_name = FOLDERS[split]
    csv_path = root / csv_name
    files = AnnotatedFiles(root, media, scan)
    for n, row in csv_rows(csv_path):
        if len(row) < 2 or not row[0] or row[1] not in index:
            raise LayoutError(
                f"annotation file {csv_path} line {n} is malformed or has a label "
                f"not in {cat_path.name}: {','.join(row)!r}"
            )
        files.add(row[0], index[row[1]], row[1])
    return Found(files.items, classes, files.missing)


def mit_twin(req: TwinRequest) -> SynthSummary:
    """The category file, the CSVs of the requested splits and their clips."""
    from vicmae_data.synth.twin import SynthSummary, absent, video_item, youtube_id

    out, rng = req.out, req.rng
    by_index = sorted(MIT_CATEGORIES, key=lambda c: c[1])
    classes = tuple(name for name, _ in by_index)
    (out / "moments_categories.txt").write_text("".join(f"{n},{i}\n" for n, i in MIT_CATEGORIES))
    items = []
    for split in req.splits:
        media, csv_name = FOLDERS[split]
        rows = []
        for i in range(req.count + req.missing):
            label = (i * 2 + 1) % len(classes)  # visit classes out of index order
            name = classes[label]
            source = "yt" if i % 3 else "getty"
            rel_in_media = f"{name}/{source}-{youtube_id(rng)}_{int(rng.integers(0, 200))}.mp4"
            # Real rows carry agreement counts after the label; readers use the first two.
            rows.append(f"{rel_in_media},{name},{int(rng.integers(2, 4))},4")
            rel = f"{media}/{rel_in_media}"
            if i < req.count:
                items.append(
                    video_item(out / rel, split, rel, label, name, i + 1, rng, render=req.render)
                )
            else:
                items.append(absent(split, rel, label, name))
        (out / csv_name).write_text("".join(r + "\n" for r in rows))
    return SynthSummary("mit", out, classes, tuple(items))


LAYOUT = Layout(
    name="mit",
    title="Moments in Time",
    media="video",
    splits=("train", "val"),
    classes_from="the indices of moments_categories.txt",
    files=(
        "moments_categories.txt",
        "{trainingSet,validationSet}.csv",
        "{training,validation}/<category>/<file>.mp4",
    ),
    read=read_mit,
    twin=mit_twin,
)
