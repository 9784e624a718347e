"""Read the datasets as they ship, into item lists: the names other code imports.

    listing = list_items("kinetics400", Path("data/kinetics400"), "train")
    listing.items[0]  # Item(path, label, class_name, source)

The readers live one file per dataset family beside this one (``kinetics.py``, ``mit.py``,
``imagenet.py``, ``folder.py``, ``ssv2.py``, ``places365.py``), each with its synth twin
and its registry entry; :mod:`vicmae_data.sources.registry` collects them. Annotated files
that are not on disk go to ``Listing.missing``; a missing root, an unknown dataset or an
unreadable or malformed annotation file raises ``LayoutError``, whose message is one line
naming the path. Labels come from the dataset's one class list, the same for every split.
"""

from __future__ import annotations

from vicmae_data.sources.items import (
    IMAGE_EXTENSIONS,
    LOOP,
    MISSING,
    OUTSIDE,
    UNLABELLED,
    VIDEO_EXTENSIONS,
    Item,
    Layout,
    LayoutError,
    Listing,
)
from vicmae_data.sources.registry import DATASETS, REGISTRY, get_layout, list_items

SPLITS: tuple[str, ...] = ("train", "val")  # the labelled splits every layout ships

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "LOOP",
    "MISSING",
    "OUTSIDE",
    "REGISTRY",
    "SPLITS",
    "UNLABELLED",
    "VIDEO_EXTENSIONS",
    "Item",
    "Layout",
    "LayoutError",
    "Listing",
    "get_layout",
    "list_items",
]
