"""What every layout reader shares: folders listed once, annotation files read with one-line errors.

No file is opened or probed beyond the annotation files: each folder is listed once with
``os.scandir``, so a 300k-video dataset lists in seconds. Symbolic links are followed
once: a folder reached a second time (a loop such as ``zloop -> .``, or two links to one
folder) is not listed again, and an annotated path that leaves the root (``../x.mp4``) is
not read; both go to ``Scanner.skipped`` with the reason.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vicmae_data.sources.items import (
    IMAGE_EXTENSIONS,
    LOOP,
    MISSING,
    OUTSIDE,
    VIDEO_EXTENSIONS,
    Item,
    LayoutError,
)


def is_media(name: str) -> bool:
    """Whether a file name is a video or image we read (hidden files are not)."""
    suffix = os.path.splitext(name)[1].lower()
    return not name.startswith(".") and (suffix in VIDEO_EXTENSIONS or suffix in IMAGE_EXTENSIONS)


class Scanner:
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
                    elif is_media(e.name):
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


class Paths:
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


class AnnotatedFiles:
    """The files an annotation file names under one media folder: items, or missing.

    Each folder is listed once (an annotation file names thousands of files per folder);
    a path named twice counts once; one that leaves the root is skipped
    (:meth:`Scanner.inside`). Moments in Time's and Places365's readers use it.
    """

    def __init__(self, root: Path, media: str, scan: Scanner) -> None:
        self.root, self.media, self.scan = root, media, scan
        self.paths = Paths(root)
        self.listed: dict[str, set[str]] = {}  # folder under the media folder -> file names
        self.seen: set[str] = set()
        self.items: list[Item] = []
        self.missing: list[dict] = []

    def add(self, rel: str, label: int, class_name: str) -> None:
        """The file ``MEDIA/rel``: an item where it is on disk, else listed as missing."""
        if rel in self.seen or not self.scan.inside(rel):
            return
        self.seen.add(rel)
        folder, _, name = rel.rpartition("/")
        if folder not in self.listed:
            self.listed[folder] = set(self.scan(self.root / self.media / folder)[0])
        source = f"{self.media}/{rel}"
        if name in self.listed[folder]:
            self.items.append(Item(self.paths(source), label, class_name, source))
        else:
            self.missing.append({"path": str(self.root / source), "reason": MISSING})


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
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


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of each non-empty line; LayoutError if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    yield n, line.strip()
    except FileNotFoundError:
        raise LayoutError(f"annotation file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LayoutError(f"cannot read {path}: {e}") from None


def json_file(path: Path) -> Any:
    """The parsed JSON document of an annotation file; LayoutError (one line) if it is
    missing, unreadable or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise LayoutError(f"annotation file {path} not found") from None
    except json.JSONDecodeError as e:
        raise LayoutError(
            f"annotation file {path} is not valid JSON (line {e.lineno}: {e.msg})"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise LayoutError(f"cannot read annotation file {path}: {e}") from None


def indexed_names(pairs: Iterable[tuple[str, str, int]], path: Path) -> list[str]:
    """Class names by index from ``(where, name, index)`` triples (``where``: "line 3"):
    the indices must be 0..N-1 without gaps or repeats (MiT's, Places365's, SSv2's)."""
    names: dict[int, str] = {}
    for where, name, idx in pairs:
        if idx in names:
            raise LayoutError(f"{path} {where}: class index {idx} is given twice")
        names[idx] = name
    if sorted(names) != list(range(len(names))):
        raise LayoutError(f"{path}: indices are not 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))]
