"""Every dataset layout vicmae reads, one :class:`~vicmae_data.sources.items.Layout` entry each.

Adding a dataset is a family file beside this one (its reader, its synth twin and its
entry: see ``ssv2.py``) and one line below; ``list_items``, ``vicmae-data convert`` and
``vicmae-data synth`` and their ``--help`` read the entries from here.

    listing = list_items("kinetics400", Path("data/kinetics400"), "train")
    listing.items[0]  # Item(path, label, class_name, source)
"""

from __future__ import annotations

import logging
from pathlib import Path

from vicmae_data.sources import folder, imagenet, kinetics, mit, places365, ssv2
from vicmae_data.sources.items import SPLIT_ALIASES, Layout, LayoutError, Listing
from vicmae_data.sources.scan import Scanner

log = logging.getLogger(__name__)

REGISTRY: dict[str, Layout] = {
    entry.name: entry
    for entry in (
        *kinetics.LAYOUTS,
        mit.LAYOUT,
        imagenet.LAYOUT,
        folder.LAYOUT,
        ssv2.LAYOUT,
        places365.LAYOUT,
    )
}
DATASETS: tuple[str, ...] = tuple(REGISTRY)


def get_layout(dataset: str) -> Layout:
    """The entry of ``dataset``; LayoutError (one line) naming the choices if unknown."""
    entry = REGISTRY.get(dataset)
    if entry is None:
        raise LayoutError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return entry


def canonical_split(entry: Layout, split: str) -> str:
    """Our name of ``split`` (``validation`` -> ``val``); LayoutError if the layout ships
    no such split."""
    split = SPLIT_ALIASES.get(split, split)
    if entry.splits and split not in entry.splits:
        raise LayoutError(
            f"unknown split {split!r} for {entry.name}; use {' or '.join(entry.splits)}"
        )
    return split


def list_items(
    dataset: str, root: Path | str, split: str = "train", variant: str | None = None
) -> Listing:
    """List the media of ``split`` of ``dataset`` stored under ``root``, as the dataset ships.

    split: one the layout ships (``train``, ``val``; SSv2 also ``test``, without labels);
    ``validate``/``validation`` are accepted for ``val``. variant: for a layout with
    several releases (Places365: ``small`` or ``large``), which one; default the one on
    disk. Raises LayoutError (one-line message naming the path) on a missing root, an
    unknown dataset, split or variant, or an unreadable or malformed annotation file.
    """
    entry = get_layout(dataset)
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"dataset root {root} does not exist or is not a folder")
    split = canonical_split(entry, split)
    if variant is not None and variant not in entry.variants:
        choices = f"choose {' or '.join(entry.variants)}" if entry.variants else "it has none"
        raise LayoutError(f"unknown variant {variant!r} for {dataset}; {choices}")
    scan = Scanner(root)
    found = entry.read(root, split, scan, variant)
    found.items.sort(key=lambda i: i.source)
    found.missing.sort(key=lambda m: m["path"])
    skipped = sorted(scan.skipped, key=lambda m: m["path"])
    for skip in skipped:
        log.warning("%s: %s", skip["path"], skip["reason"])
    return Listing(
        dataset,
        root,
        split,
        found.items,
        found.classes,
        found.missing,
        skipped,
        found.titles,
        image_dataset=entry.media == "image",
        labelled=split not in entry.unlabelled,
        variant=found.variant,
    )


def layouts_help() -> str:
    """Every layout's paragraph (what ROOT holds, splits, classes), for ``--help``."""
    return "\n\n".join("\n".join(entry.help_lines()) for entry in REGISTRY.values())
