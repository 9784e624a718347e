"""Places365-Standard as distributed: the devkit's category and file lists, and image folders.

    ROOT/categories_places365.txt           /a/airfield 0
    ROOT/places365_train_standard.txt       /a/airfield/00000001.jpg 0
    ROOT/places365_val.txt                  Places365_val_00000001.jpg 165
    ROOT/data_256/a/airfield/00000001.jpg   train, 256x256: train_256_places365standard.tar
    ROOT/data_large/a/airfield/...          train, full size: train_large_places365standard.tar
    ROOT/val_256/Places365_val_00000001.jpg val, 256x256: val_256.tar (val_large/: val_large.tar)

The three lists are the devkit ``filelist_places365-standard.tar`` unpacked into ROOT; each
image archive unpacks into its own folder. This is the layout torchvision's
``datasets.Places365`` reads (same list and archive names), except that torchvision renames
the train folder after downloading it to ``data_256_standard`` / ``data_large_standard``;
both names are read here. Category names have one or two levels below the letter
(``/b/bakery/shop``). Labels are the indices of ``categories_places365.txt``; the title of a
class is its name without the letter (``bakery/shop``). The small and the large release are
the variants ``small`` and ``large``: by default the one on disk (an error names both when
both are there). Places365's test split (``places365_test.txt``) is not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vicmae_data.sources.items import Found, Layout, LayoutError
from vicmae_data.sources.scan import AnnotatedFiles, Scanner, indexed_names, text_lines

if TYPE_CHECKING:
    from vicmae_data.synth.twin import SynthSummary, TwinRequest

CATEGORIES = "categories_places365.txt"
SPLIT_FILES = {"train": "places365_train_standard.txt", "val": "places365_val.txt"}
VARIANTS = ("small", "large")
# The image folder of each (split, variant): as the archive unpacks, then torchvision's name.
FOLDERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("train", "small"): ("data_256", "data_256_standard"),
    ("train", "large"): ("data_large", "data_large_standard"),
    ("val", "small"): ("val_256",),
    ("val", "large"): ("val_large",),
}

# Real categories, two of them two levels deep. The indices are deliberately not the
# alphabetical order (the release's are), so a reader that sorts names or trusts the line
# order instead of reading the indices gives wrong labels.
PLACES_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("/a/airfield", 3),
    ("/b/bakery/shop", 0),
    ("/c/campus", 4),
    ("/f/field/wild", 1),
    ("/s/ski_slope", 2),
)
# The small release is 256x256; the large one keeps the photos' own sizes.
TWIN_SIZES = {"small": ((32, 32),), "large": ((48, 36), (36, 48), (64, 40))}


def title(name: str) -> str:
    """A category's readable name: ``/b/bakery/shop`` -> ``bakery/shop``."""
    return name[3:] if len(name) > 3 and name[0] == name[2] == "/" else name


def _categories(path: Path):
    for n, line in text_lines(path):
        parts = line.split()
        try:
            name, idx = parts
            if not name.startswith("/"):
                raise ValueError
            yield f"line {n}", name, int(idx)
        except ValueError:
            raise LayoutError(f"{path} line {n} is not '/x/category index': {line!r}") from None


def _images(root: Path, split: str, variant: str | None) -> tuple[str, str]:
    """(variant, image folder) of ``split``: the one asked for, else the one on disk."""
    here = [
        (v, folder)
        for v in VARIANTS
        for folder in FOLDERS[(split, v)]
        if (variant is None or v == variant) and (root / folder).is_dir()
    ]
    variants = sorted({v for v, _ in here}, key=VARIANTS.index)
    if len(variants) > 1:
        both = " and ".join(f"{folder}/ ({v})" for v, folder in here)
        raise LayoutError(
            f"Places365 {split} images in both {both} under {root}: "
            f"choose one with --variant {'|'.join(VARIANTS)}"
        )
    if not here:
        wanted = [variant] if variant else list(VARIANTS)
        expected = " or ".join(f"{FOLDERS[(split, v)][0]}/" for v in wanted)
        raise LayoutError(
            f"Places365 {split} image folder not found: expected {expected} in {root}"
        )
    return here[0]


def read_places365(root: Path, split: str, scan: Scanner, variant: str | None = None) -> Found:
    """List ``split`` (train or val) of Places365-Standard under ``root``."""
    cat_path = root / CATEGORIES
    classes = indexed_names(_categories(cat_path), cat_path)
    variant, images = _images(root, split, variant)
    list_path = root / SPLIT_FILES[split]
    files = AnnotatedFiles(root, images, scan)
    for n, line in text_lines(list_path):
        parts = line.split()
        try:
            image, label = parts[0], int(parts[1])
            if len(parts) != 2 or not 0 <= label < len(classes):
                raise ValueError
        except (IndexError, ValueError):
            raise LayoutError(
                f"annotation file {list_path} line {n} is not 'image label' with a label of "
                f"{CATEGORIES}: {line!r}"
            ) from None
        files.add(image.removeprefix("/"), label, classes[label])  # train paths start with "/"
    return Found(files.items, classes, files.missing, [title(c) for c in classes], variant)


def places365_twin(req: TwinRequest) -> SynthSummary:
    """The devkit's three lists (the category list in name order, its indices not) and the
    JPEGs of the requested splits in the variant's folders (default ``small``)."""
    from vicmae_data.synth.twin import SynthSummary, absent, image_item

    out, rng = req.out, req.rng
    variant = req.variant or "small"
    by_index = sorted(PLACES_CATEGORIES, key=lambda c: c[1])
    classes = tuple(name for name, _ in by_index)
    (out / CATEGORIES).write_text("".join(f"{n} {i}\n" for n, i in sorted(PLACES_CATEGORIES)))
    items = []
    for split in req.splits:
        folder = FOLDERS[(split, variant)][0]
        lines, per_class = [], [0] * len(classes)
        for i in range(req.count + req.missing):
            label = (i * 2 + 1) % len(classes)  # visit classes out of index order
            per_class[label] += 1
            if split == "train":
                image = f"{classes[label]}/{per_class[label]:08d}.jpg"
            else:
                image = f"Places365_val_{i + 1:08d}.jpg"
            lines.append(f"{image} {label}\n")
            rel = f"{folder}/{image.removeprefix('/')}"
            if i >= req.count:
                items.append(absent(split, rel, label, classes[label], "image"))
                continue
            items.append(
                image_item(
                    out / rel, split, rel, label, classes[label], i, rng,
                    render=req.render, sizes=TWIN_SIZES[variant],
                )
            )  # fmt: skip
        (out / SPLIT_FILES[split]).write_text("".join(lines))
    return SynthSummary("places365", out, classes, tuple(items))


LAYOUT = Layout(
    name="places365",
    title="Places365-Standard",
    media="image",
    splits=("train", "val"),
    variants=VARIANTS,
    classes_from=f"the indices of {CATEGORIES}",
    files=(
        f"{CATEGORIES}, {SPLIT_FILES['train']}, {SPLIT_FILES['val']}",
        "data_256/ and val_256/ (small), or data_large/ and val_large/ (large)",
    ),
    read=read_places365,
    twin=places365_twin,
)
