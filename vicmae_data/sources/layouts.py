"""Read Kinetics, Moments in Time, ImageNet and class folders as they ship, into item lists.

    listing = list_items("kinetics400", Path("data/kinetics400"), "train")
    listing.items[0]  # Item(path, label, class_name, source)

No file is opened or probed here: each folder is listed once with `os.scandir`, so a
300k-video dataset lists in seconds. Annotated files that are not on disk go to
`Listing.missing` (a few percent is normal for Kinetics); a missing root, an unknown
dataset or an unreadable or malformed annotation file raises `LayoutError`, whose
message is one line naming the path.

Labels come from the dataset's one class list, the same for every split (a class missing
from one split's annotations must not shift the labels of the others):
- Kinetics: index into the sorted union of the class names of every annotation CSV that
  ships with a `label` column (train, val/validate, test).
- Moments in Time: the index given by `moments_categories.txt`.
- ImageNet: the line order of `LOC_synset_mapping.txt` (whose names become the classes'
  titles) when present, else the sorted wnid folders of `train/` (of the split if there
  is no `train/`).
- folder: index into the sorted class folder names; the root is the class tree
  (`<root>/<class>/<file>`, like torchvision's ImageFolder) and `split` is only recorded.

Symbolic links are followed once: a folder reached a second time (a loop such as
`zloop -> .`, or two links to one folder) is not listed again, and an annotated path that
leaves the root (`../x.mp4`) is not read; both go to `Listing.skipped` with the reason.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = (
    "kinetics400",
    "kinetics600",
    "kinetics700",
    "mit",
    "imagenet",
    "folder",
)
SPLITS: tuple[str, ...] = ("train", "val")  # as every layout names them here
VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".avi",
        ".mkv",
        ".webm",
        ".mov",
        ".mpg",
        ".mpeg",
        ".flv",
        ".wmv",
        ".3gp",
        ".ogv",
        ".ts",
    }
)
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)
MISSING = "missing on disk"
LOOP = "symbolic link to a folder already listed (a loop or a second link): not listed again"
OUTSIDE = "path leaves the dataset root: not read"


class LayoutError(ValueError):
    """The dataset cannot be listed: missing root, unknown dataset, bad annotation file."""


@dataclass(frozen=True)
class Item:
    """One media file of a dataset and its label."""

    path: Path  # media file on disk
    label: int  # index into Listing.classes
    class_name: str
    source: str  # path relative to the root (posix): stable id for sharding and resume

    @property
    def kind(self) -> str:
        """`"image"` or `"video"`, from the file extension (ImageNet's are all images)."""
        return "image" if self.path.suffix.lower() in IMAGE_EXTENSIONS else "video"


@dataclass(frozen=True)
class Listing:
    """Items of one split of one dataset, sorted by `source`, with the class names."""

    dataset: str
    root: Path
    split: str
    items: list[Item]
    classes: list[str]  # index -> name: the dataset's one class list
    missing: list[dict]  # annotated but not on disk: {"path": ..., "reason": "missing on disk"}
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: loops, ../ paths
    titles: list[str] = field(default_factory=list)  # index -> readable name, if shipped

    @property
    def image_dataset(self) -> bool:
        """Whether every item of the dataset is a still image (ImageNet)."""
        return self.dataset == "imagenet"


def list_items(dataset: str, root: Path | str, split: str = "train") -> Listing:
    """List the media of `split` of `dataset` stored under `root`, as the dataset ships.

    split: `train` or `val` (`validate`/`validation` are accepted for `val`).
    Raises LayoutError (one-line message naming the path) on a missing root, an unknown
    dataset or split, or an unreadable or malformed annotation file.
    """
    if dataset not in DATASETS:
        raise LayoutError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"dataset root {root} does not exist or is not a folder")
    split = {"validate": "val", "validation": "val", "training": "train"}.get(split, split)
    if split not in ("train", "val") and dataset != "folder":
        raise LayoutError(f"unknown split {split!r} for {dataset} in {root}; use train or val")
    scan = _Scanner(root)
    titles: list[str] = []
    if dataset.startswith("kinetics"):
        items, classes, missing = _kinetics(root, split, scan)
    elif dataset == "mit":
        items, classes, missing = _mit(root, split, scan)
    elif dataset == "imagenet":
        items, classes, missing, titles = _imagenet(root, split, scan)
    else:
        items, classes, missing = _folder(root, scan)
    items.sort(key=lambda i: i.source)
    missing.sort(key=lambda m: m["path"])
    skipped = sorted(scan.skipped, key=lambda m: m["path"])
    for entry in skipped:
        log.warning("%s: %s", entry["path"], entry["reason"])
    return Listing(dataset, root, split, items, classes, missing, skipped, titles)


def _is_media(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return not name.startswith(".") and (suffix in VIDEO_EXTENSIONS or suffix in IMAGE_EXTENSIONS)


class _Scanner:
    """Lists folders, each real folder once (symbolic-link loops and repeats are skipped)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: set[tuple[int, int]] = set()  # (device, inode) of every folder listed
        self.skipped: list[dict] = []

    def claim(self, folder: Path) -> bool:
        """Mark `folder` as listed; False (and reported) when it was listed before."""
        try:
            st = folder.stat()
        except OSError:
            return True  # listing it says what is wrong
        if (st.st_dev, st.st_ino) in self.seen:
            self.skipped.append({"path": str(folder), "reason": LOOP})
            return False
        self.seen.add((st.st_dev, st.st_ino))
        return True

    def __call__(self, folder: Path, claimed: bool = False) -> tuple[list[str], list[str]]:
        """Names of the media files and of the (non-hidden) subfolders of `folder`."""
        if not claimed and not self.claim(folder):
            return [], []
        files, dirs = [], []
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir():
                        dirs.append(e.name)
                    elif _is_media(e.name):
                        files.append(e.name)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise LayoutError(f"cannot list {folder}: {e.strerror or e}") from None
        return files, dirs

    def inside(self, rel: str) -> bool:
        """Whether the annotated relative path `rel` stays under the root; else skipped."""
        parts = rel.replace("\\", "/").split("/")
        if rel.startswith("/") or ".." in parts:
            self.skipped.append({"path": rel, "reason": OUTSIDE})
            return False
        return True


class _Paths:
    """`root / rel`, parsing each folder once: pathlib's parsing dominates at 300k items."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: dict[str, Path] = {}

    def __call__(self, rel: str) -> Path:
        folder, _, name = rel.rpartition("/")
        d = self.dirs.get(folder)
        if d is None:
            d = self.dirs[folder] = self.root / folder if folder else self.root
        return d / name


def _numbered(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped fields) of each non-empty CSV row; LayoutError if unreadable."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield reader.line_num, [cell.strip() for cell in row]
    except FileNotFoundError:
        raise LayoutError(f"annotation file {path} not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LayoutError(f"cannot read annotation file {path}: {e}") from None


KINETICS_CSVS = ("train.csv", "val.csv", "validate.csv", "test.csv")


def _kinetics_classes(annotations: Path) -> set[str]:
    """The class names of every shipped annotation CSV that has a ``label`` column."""
    classes: set[str] = set()
    for name in KINETICS_CSVS:
        path = annotations / name
        if not path.is_file():
            continue
        rows = _numbered(path)
        header = next(rows, (0, []))[1]
        if "label" not in header:
            continue  # Kinetics-700's test.csv ships without labels
        col = header.index("label")
        classes.update(row[col] for _, row in rows if col < len(row) and row[col])
    return classes


def _kinetics(root: Path, split: str, scan: _Scanner) -> tuple[list[Item], list[str], list[dict]]:
    csv_path = root / "annotations" / f"{split}.csv"
    if (
        split == "val"
        and not csv_path.exists()
        and (root / "annotations" / "validate.csv").exists()
    ):
        csv_path = root / "annotations" / "validate.csv"
    rows = _numbered(csv_path)
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
    paths = _Paths(root)
    for stem, label in annotated.items():
        rel = on_disk.get(stem)
        if rel is None:
            guess = f"{split}/{label}/{stem}.mp4" if nested else f"{split}/{stem}.mp4"
            missing.append({"path": str(root / guess), "reason": MISSING})
        else:
            items.append(Item(paths(rel), index[label], label, rel))
    return items, classes, missing


def _mit(root: Path, split: str, scan: _Scanner) -> tuple[list[Item], list[str], list[dict]]:
    cat_path = root / "moments_categories.txt"
    names: dict[int, str] = {}
    for n, row in _numbered(cat_path):
        try:
            name, idx = row[0], int(row[1])
        except (IndexError, ValueError):
            raise LayoutError(
                f"{cat_path} line {n} is not 'name,index': {','.join(row)!r}"
            ) from None
        names[idx] = name
    if sorted(names) != list(range(len(names))):
        raise LayoutError(f"{cat_path}: indices are not 0..{len(names) - 1} without gaps")
    classes = [names[i] for i in range(len(names))]
    index = {c: i for i, c in enumerate(classes)}

    media, csv_name = (
        ("training", "trainingSet.csv") if split == "train" else ("validation", "validationSet.csv")
    )
    csv_path = root / csv_name
    listed: dict[str, set[str]] = {}  # folder relative to media dir -> media file names
    items, missing = [], []
    paths = _Paths(root)
    seen: set[str] = set()
    for n, row in _numbered(csv_path):
        if len(row) < 2 or not row[0] or row[1] not in index:
            raise LayoutError(
                f"annotation file {csv_path} line {n} is malformed or has a label "
                f"not in {cat_path.name}: {','.join(row)!r}"
            )
        rel_media, label = row[0], row[1]
        if rel_media in seen or not scan.inside(rel_media):
            continue
        seen.add(rel_media)
        folder, _, name = rel_media.rpartition("/")
        if folder not in listed:
            listed[folder] = set(scan(root / media / folder)[0])
        rel = f"{media}/{rel_media}"
        if name in listed[folder]:
            items.append(Item(paths(rel), index[label], label, rel))
        else:
            missing.append({"path": str(root / rel), "reason": MISSING})
    return items, classes, missing


def _imagenet(
    root: Path, split: str, scan: _Scanner
) -> tuple[list[Item], list[str], list[dict], list[str]]:
    # Kaggle's copy nests the images under ILSVRC/Data/CLS-LOC/ beside the LOC_* files.
    base = root / "ILSVRC" / "Data" / "CLS-LOC"
    prefix = "ILSVRC/Data/CLS-LOC/" if base.is_dir() else ""
    base = base if prefix else root
    mapping = root / "LOC_synset_mapping.txt"
    classes: list[str] | None = None
    titles: list[str] = []
    if mapping.exists():
        classes = []
        for n, row in _lines(mapping):
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
        for n, row in _numbered(solution):
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
    paths = _Paths(root)
    return [Item(paths(rel), index[w], w, rel) for rel, w in items], classes, missing, titles


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    yield n, line.strip()
    except (OSError, UnicodeDecodeError) as e:
        raise LayoutError(f"cannot read {path}: {e}") from None


def _folder(root: Path, scan: _Scanner) -> tuple[list[Item], list[str], list[dict]]:
    # A class folder that is a link to one already listed (`zloop -> .`) is no class.
    classes = [d for d in sorted(scan(root)[1]) if scan.claim(root / d)]
    items = []
    for label, name in enumerate(classes):
        stack = [name]  # relative folders to list, depth first in sorted order
        while stack:
            rel_dir = stack.pop()
            files, dirs = scan(root / rel_dir, claimed=rel_dir == name)
            folder = root / rel_dir
            items += [Item(folder / f, label, name, f"{rel_dir}/{f}") for f in files]
            stack += [f"{rel_dir}/{d}" for d in sorted(dirs, reverse=True)]
    return items, classes, []
