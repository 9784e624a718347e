"""A validation split held out of a training split, for datasets that ship none.

    held = holdout_sources(listing.items, 0.1)   # set of source ids
    vicmae-data convert folder --root data/mine/train --out train.beton \\
        --holdout 0.1 --holdout-out val.beton

Stratified and deterministic: from every class, the ``round(fraction * n)`` items (half
rounds up) whose source path hashes lowest (SHA-1, the hash ``--shard`` uses) go to the
held-out file. The choice depends only on the source paths and labels, never on the
order, the machine or a seed: every shard of a sharded conversion makes the same choice,
and a rerun makes it again. An item added to a class later moves at most one item of that
class across the line.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol


class _Item(Protocol):
    label: int
    source: str


def source_hash(source: str) -> int:
    """A stable 64-bit hash of a source id (any string a file system can hold)."""
    digest = hashlib.sha1(source.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "little")


def holdout_count(fraction: float, n: int) -> int:
    """How many of a class's ``n`` items are held out: round half up of ``fraction * n``."""
    return min(n, math.floor(fraction * n + 0.5))


def holdout_sources(items: Iterable[_Item], fraction: float) -> set[str]:
    """The source ids of the held-out items (see the module docstring)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    by_class: dict[int, list[str]] = defaultdict(list)
    for item in items:
        by_class[item.label].append(item.source)
    held: set[str] = set()
    for sources in by_class.values():
        ranked = sorted(sources, key=lambda s: (source_hash(s), s))
        held.update(ranked[: holdout_count(fraction, len(ranked))])
    return held
