"""ffcv's page layout: how large the pages of a .beton are.

ffcv's process-cache reader loads whole pages and needs every allocation inside one page;
the memory-mapped readers do not care. A page must therefore hold the largest sample.
"""

from __future__ import annotations

# ffcv's smallest page (its writer defaults to 8 MiB). Pages only need to hold the largest
# sample; each writer process leaves one part-filled page, so small pages keep small files
# small (8 MiB pages made a 5 MB demo file 16 MB).
MIN_PAGE_SIZE = 2 << 20
MAX_PAGE_SIZE = 1 << 31  # ffcv refuses >= 4 GiB; a 2 GiB sample is already absurd
PAGE_SLACK = 64 << 10  # room for the JSON meta and the int label beside the frames


def page_size_for(max_sample_bytes: int) -> int:
    """Smallest power-of-two page (>= 2 MiB) that holds the largest sample."""
    need = max_sample_bytes + PAGE_SLACK
    if need > MAX_PAGE_SIZE:
        raise ValueError(f"a sample of {max_sample_bytes} bytes is larger than any ffcv page")
    page = MIN_PAGE_SIZE
    while page < need:
        page *= 2
    return page
