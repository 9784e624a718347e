"""Where every sample's bytes go in a .beton: pages packed with no padding worth the name.

What ffcv 1.0.2's format asks of the data region (``ffcv/reader.py``,
``ffcv/memory_managers/``): every allocation is listed (sample, address, size) in the table
at the end of the file and may sit anywhere after the metadata table; the memory-mapped
readers need nothing more. ffcv's process-cache reader loads whole pages (``address >>
log2(page_size)``) and slices each allocation out of one page, so no allocation may cross a
page boundary, and a page must hold the largest one. Nothing else: the data need not start
on a page boundary, and the last page need not be written whole.

ffcv's own writer wastes what that allows: it fills pages in sample order, moves a sample
that does not fit the rest of a page to the next page, starts the data on a page boundary
and writes every page whole (each writer process's last one too). One long clip forces a
large page for all, and a small set then is mostly zeros (measured: 37.7 MB of frames in a
100.7 MB file).

:func:`plan_pages` packs in sample order, each sample into the first of the last
``open_pages`` pages with room for it (first fit over a window: small samples fill the gaps
that large ones leave, while a page's samples stay close in index order, so the writer reads
its inputs and writes its output almost sequentially). :func:`choose_page_size` takes the
smallest power-of-two page that holds the largest sample and, if the gaps would still exceed
``target_waste`` of the bytes, doubles it a few times (more samples per page, smaller gaps
relative to the page).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# ffcv's writer refuses pages under 2 MiB (its "most common HugePage size") and at or
# above 4 GiB (the header stores the page size as uint32).
MIN_PAGE_SIZE = 2 << 20
MAX_PAGE_SIZE = 1 << 31
OPEN_PAGES = 16
TARGET_WASTE = 0.01
MAX_DOUBLINGS = 6  # at most 64x the smallest page that fits


@dataclass(frozen=True)
class PagePlan:
    """Addresses of the samples' blobs (``addresses[i]`` for ``sizes[i]``) and the gaps."""

    page_size: int
    addresses: np.ndarray  # uint64, one per sample
    end: int  # first byte after the highest blob
    waste: int  # bytes of gaps left between ``start`` and ``end``

    @property
    def stored(self) -> int:
        return int(self.end) - int(self.waste)


def smallest_page_for(max_size: int) -> int:
    """The smallest power-of-two page (>= 2 MiB) that holds an allocation of ``max_size``."""
    if max_size > MAX_PAGE_SIZE:
        raise ValueError(f"a sample of {max_size} bytes is larger than any ffcv page (2 GiB)")
    page = MIN_PAGE_SIZE
    while page < max_size:
        page *= 2
    return page


def plan_pages(
    sizes: Sequence[int] | np.ndarray, start: int, page_size: int, open_pages: int = OPEN_PAGES
) -> PagePlan:
    """Place blobs of ``sizes`` (in order) from byte ``start`` on, none crossing a page.

    A blob goes into the first open page with room for it, else into a fresh page after
    the last one; when more than ``open_pages`` pages are open the oldest is closed (its
    free tail stays a gap). The tail of the last page is not a gap: the file goes on there.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) and int(sizes.max()) > page_size:
        raise ValueError(f"a blob of {int(sizes.max())} bytes does not fit {page_size}-byte pages")
    addresses = np.zeros(len(sizes), dtype=np.uint64)
    # Open pages as [free_from, page_end]; a page is identified by its end.
    opened: deque[list[int]] = deque()
    last_end = (start // page_size + 1) * page_size  # the page holding `start`
    opened.append([start, last_end])
    for i, size in enumerate(sizes.tolist()):
        for page in opened:
            if page[1] - page[0] >= size:
                break
        else:
            last_end += page_size
            page = [last_end - page_size, last_end]
            opened.append(page)
            if len(opened) > open_pages:
                opened.popleft()
        addresses[i] = page[0]
        page[0] += size
    end = int((addresses.astype(np.int64) + sizes).max()) if len(sizes) else start
    waste = end - start - int(sizes.sum())
    return PagePlan(page_size, addresses, end, waste)


def choose_page_size(
    sizes: Sequence[int] | np.ndarray,
    start: int,
    *,
    target_waste: float = TARGET_WASTE,
    open_pages: int = OPEN_PAGES,
) -> PagePlan:
    """The plan with the smallest page whose gaps stay under ``target_waste`` of the bytes
    stored (or, if none of a few doublings gets there, the plan with the fewest gaps)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    page = smallest_page_for(int(sizes.max()) if len(sizes) else 1)
    best: PagePlan | None = None
    for _ in range(MAX_DOUBLINGS + 1):
        plan = plan_pages(sizes, start, page, open_pages)
        if best is None or plan.waste < best.waste:
            best = plan
        if plan.waste <= target_waste * max(int(sizes.sum()), 1) or page * 2 > MAX_PAGE_SIZE:
            break
        page *= 2
    assert best is not None
    return best
