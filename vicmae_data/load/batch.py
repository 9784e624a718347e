"""What the loader yields: one batch of views with their labels and where they came from."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """One batch from :func:`vicmae_data.make_loader`.

    - ``views``: uint8 ``(B, V, 3, H, W)``, the V sampled, cropped views of each sample;
    - ``labels``: int64 ``(B,)``, class indices;
    - ``is_image``: bool ``(B,)``, True where the sample is a one-frame item;
    - ``indices``: int64 ``(B,)``, each sample's index in its own .beton (what
      ``read_sample(path, index)`` and ``vicmae-data preview --index`` take);
    - ``files``: int64 ``(B,)``, which of ``make_loader``'s paths each sample came from
      (all 0 for one file).

    ``indices`` and ``files`` are None only in batches built by hand.
    """

    views: torch.Tensor
    labels: torch.Tensor
    is_image: torch.Tensor
    indices: torch.Tensor | None = None
    files: torch.Tensor | None = None
