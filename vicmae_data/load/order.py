"""A traversal order for ffcv that works with several ranks and with files larger than RAM.

ffcv 1.0.2's own orders fall short here: ``QUASI_RANDOM`` refuses ``distributed=True``, and a
fully random order makes ffcv's process cache keep nearly every page of the file in memory
(a page is freed only after the last batch that needs it).

:class:`BlockShuffleOrder` gives each epoch ``e``:

1. a random permutation of the file's pages, seeded by ``(seed, e)``, the samples of each
   page kept together (in a random order inside the page);
2. that sequence padded by wrapping (as ``DistributedSampler`` does) to a multiple of
   ``world_size`` and cut into ``world_size`` contiguous shares: rank ``r`` takes share
   ``r``, so ranks are disjoint (but for the padding), read different pages, and get
   different shares every epoch;
3. inside a share, samples shuffled within windows of about ``window_pages`` pages, so a
   batch mixes samples from several pages while the pages in memory at once stay bounded
   by the window and ffcv's read-ahead, not by the file size.

When the whole file fits one page (small files) this is a plain random permutation.

It is an ffcv :class:`~ffcv.traversal_order.base.TraversalOrder`; ffcv 1.0.2 needs it passed
through :class:`vicmae_data.ffcv_private.OrderFactory` (its ``order=`` check is inverted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from ffcv.traversal_order.base import TraversalOrder

if TYPE_CHECKING:
    from ffcv.loader import Loader


def default_rank_world() -> tuple[int, int]:
    """(rank, world_size) from ``torch.distributed`` when it is initialised, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def block_shuffle_order(
    indices: np.ndarray,
    pages: np.ndarray,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    window: int,
) -> np.ndarray:
    """The sample order of one rank for one epoch (see the module docstring).

    ``indices``: sample ids; ``pages``: the page of each; ``window``: samples per shuffle
    window. Returns ``ceil(len(indices) / world_size)`` sample ids.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    n = len(indices)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, 0x71C3AE])
    unique_pages = np.unique(pages)
    page_rank = np.empty(int(unique_pages.max()) + 1, dtype=np.int64)
    page_rank[unique_pages] = rng.permutation(len(unique_pages))
    shuffled = rng.permutation(n)
    by_page = shuffled[np.argsort(page_rank[pages[shuffled]], kind="stable")]
    seq = np.asarray(indices, dtype=np.int64)[by_page]
    share = -(-n // world_size)
    if share * world_size > n:
        seq = np.concatenate([seq, np.resize(seq, share * world_size - n)])
    mine = seq[rank * share : (rank + 1) * share].copy()
    window = max(1, int(window))
    for start in range(0, share, window):
        block = mine[start : start + window]
        mine[start : start + window] = block[rng.permutation(len(block))]
    return mine


class BlockShuffleOrder(TraversalOrder):
    """Page-aware, seeded, rank-split order (see the module docstring).

    ``page_of[i]`` is the page holding sample ``i``'s frames (``ptr // page_size`` of its
    table row), for every sample of the file; the order uses it for the samples the loader
    reads (its ``indices``).
    """

    def __init__(
        self,
        loader: Loader,
        *,
        page_of: np.ndarray,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        window_pages: int = 8,
    ) -> None:
        super().__init__(loader)
        if rank is None or world_size is None:
            auto_rank, auto_world = default_rank_world()
            rank = auto_rank if rank is None else rank
            world_size = auto_world if world_size is None else world_size
        self.rank, self.world_size, self.seed = int(rank), int(world_size), int(seed)
        self.distributed = self.world_size > 1
        # page_of[i]: the page of sample i's frames (from the file's own table).
        self.page_of = np.asarray(page_of, dtype=np.int64)[np.asarray(self.indices, np.int64)]
        num_pages = max(1, len(np.unique(self.page_of)))
        per_page = len(self.indices) / num_pages
        self.window = max(int(np.ceil(per_page * window_pages)), 2 * loader.batch_size)

    def sample_order(self, epoch: int) -> Sequence[int]:
        return block_shuffle_order(
            np.asarray(self.indices, dtype=np.int64),
            self.page_of,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            window=self.window,
        )
