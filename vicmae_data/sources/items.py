"""What a layout reader returns: items with labels, the listing of one split, the registry entry.

Every dataset family (``kinetics.py``, ``ssv2.py``, ...) describes itself with one
:class:`Layout` entry: its reader, its synth twin, its help text and what else differs
(video or image, the splits it ships, which of them ship without labels, where the class
list comes from). :mod:`vicmae_data.sources.registry` collects the entries; everything
that names a dataset (``list_items``, ``vicmae-data convert`` and ``synth`` and their
``--help``) reads them from there.

Only the standard library here: ``vicmae-data --help`` imports the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vicmae_data.sources.scan import Scanner
    from vicmae_data.synth.twin import SynthSummary, TwinRequest

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
# The label of every item of a split that ships without labels (SSv2's test split), as
# mmaction2's Kinetics test list writes it ("label = -1  # label unknown"). Such a split's
# .beton stores it as is; its manifest marks the samples unlabelled.
UNLABELLED = -1
# Other names users give our split names; every layout accepts them.
SPLIT_ALIASES: dict[str, str] = {"validate": "val", "validation": "val", "training": "train"}


class LayoutError(ValueError):
    """The dataset cannot be listed: missing root, unknown dataset, bad annotation file."""


@dataclass(frozen=True)
class Item:
    """One media file of a dataset and its label (:data:`UNLABELLED` where none ships)."""

    path: Path  # media file on disk
    label: int  # index into Listing.classes, or UNLABELLED
    class_name: str  # "" when unlabelled
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
    image_dataset: bool = False  # every item is a still image (ImageNet, Places365)
    labelled: bool = True  # False: the split ships without labels (every label UNLABELLED)
    variant: str | None = None  # which of the layout's variants was read (Places365: small)


@dataclass
class Found:
    """What a layout's reader found in one split (``list_items`` sorts and wraps it)."""

    items: list[Item]
    classes: list[str]
    missing: list[dict] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    variant: str | None = None


Reader = Callable[[Path, str, "Scanner", "str | None"], Found]
Twin = Callable[["TwinRequest"], "SynthSummary"]


@dataclass(frozen=True)
class Layout:
    """One dataset layout as it ships: how to read it, its synth twin, its help.

    ``read(root, split, scan, variant)`` lists a split (``split`` is one of ``splits``, or
    any name when ``splits`` is empty); ``twin(request)`` writes a small dataset in the same
    layout, file for file (it may import PyAV and numpy: only synth calls it).
    """

    name: str
    title: str  # the dataset's own name: "Something-Something v2"
    media: str  # "video", "image", or "mixed" (class folders of either)
    splits: tuple[str, ...]  # the splits it ships, by our names; () = any name (folder)
    classes_from: str  # where the class list comes from, for the help and the docs
    files: tuple[str, ...]  # what ROOT holds, one line each, for the help
    read: Reader
    twin: Twin
    unlabelled: tuple[str, ...] = ()  # splits that ship without labels
    variants: tuple[str, ...] = ()  # releases of one layout the reader tells apart
    split_files: dict[str, str] = field(default_factory=dict)  # split -> the file it reads

    def __post_init__(self) -> None:
        if self.media not in ("video", "image", "mixed"):
            raise ValueError(f"{self.name}: media must be video, image or mixed")
        if not set(self.unlabelled) <= set(self.splits):
            raise ValueError(f"{self.name}: unlabelled splits must be among its splits")

    def help_lines(self) -> list[str]:
        """The layout's paragraph in ``vicmae-data convert --help``."""
        splits = []
        for s in self.splits or ("any name (only recorded)",):
            notes = [f"reads {self.split_files[s]}"] if s in self.split_files else []
            notes += ["no labels: -1"] if s in self.unlabelled else []
            splits.append(f"{s} ({'; '.join(notes)})" if notes else s)
        lines = [f"{self.name}: {self.title} ({self.media})", f"  splits: {', '.join(splits)}"]
        if self.variants:
            lines.append(f"  --variant {' | '.join(self.variants)} (default: the one on disk)")
        lines += [f"  ROOT/{f}" for f in self.files]
        lines.append(f"  classes: {self.classes_from}")
        return lines
