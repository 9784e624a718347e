"""How several .beton files share the batches of one loader: by weight, or concatenated.

- ``"weights"`` (:func:`split_batch`): file ``i`` gives a fixed ``round(B * w_i / sum(w))``
  samples of every batch; the first file defines the epoch and the others cycle.
- ``"concat"`` (:func:`concat_schedule`): the files as one concatenated dataset, as the
  ViC-MAE authors train on ImageNet and Kinetics together (jeffhernandez1995/ViC-MAE,
  ``scripts/pretrain_in1k_k400.sh``: one file holding both). One epoch is one pass over
  every sample of every file, and each batch takes from each file its share of the whole,
  in proportion to the file's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIX_MODES = ("weights", "concat")


def split_batch(batch_size: int, weights: Sequence[float]) -> list[int]:
    """Samples per file in a batch: ``round(B * w_i / sum(w))``, summing to ``B``, each >= 1."""
    total = float(sum(weights))
    sizes = [max(1, round(batch_size * w / total)) for w in weights]
    sizes[0] += batch_size - sum(sizes)  # rounding slack goes to the epoch-defining file
    if sizes[0] < 1:
        raise ValueError(f"batch_size {batch_size} is too small for {len(weights)} files")
    return sizes


def concat_schedule(sizes: Sequence[int], batch_size: int, drop_last: bool) -> np.ndarray:
    """Samples each file gives each batch of one concatenated epoch: int64 ``(batches, files)``.

    The ``sum(sizes)`` samples are laid out in one sequence where file ``i``'s ``j``-th
    sample sits at the time ``(j + 1/2) / n_i`` (ties in file order): each file spread
    evenly over the epoch. Batch ``t`` is positions ``[t B, (t + 1) B)``, so a file gives
    every batch ``B n_i / N`` samples rounded up or down, and over the epoch each of its
    samples once; ``drop_last`` leaves out the last, partial batch.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) == 0 or sizes.min() < 1 or batch_size < 1:
        raise ValueError(f"concat_schedule needs sizes >= 1 and batch_size >= 1, not {sizes}")
    files = np.repeat(np.arange(len(sizes)), sizes)
    times = np.concatenate([(np.arange(n) + 0.5) / n for n in sizes.tolist()])
    sequence = files[np.lexsort((files, times))]
    total = int(sizes.sum())
    batches = total // batch_size if drop_last else -(-total // batch_size)
    counts = np.zeros((batches, len(sizes)), dtype=np.int64)
    used = min(total, batches * batch_size)
    np.add.at(counts, (np.arange(used) // batch_size, sequence[:used]), 1)
    return counts
