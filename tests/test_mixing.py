"""mix="concat": several files read as one concatenated dataset (the authors' IN1k + K400 run).

One epoch must visit every sample of every file exactly once (but for the last, partial
batch under ``drop_last``), each batch taking from each file in proportion to its size, with
the labels and ``batch.files`` of the sample's own file.
"""

from __future__ import annotations

import numpy as np
import pytest
from media import webp

from vicmae_data import make_loader
from vicmae_data.format.beton import Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.load.mixing import concat_schedule
from vicmae_data.write.beton_writer import write_beton

SIZES = {"a": (24, 3, 0), "b": (10, 1, 100), "c": (5, 2, 200)}  # samples, frames, label0


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three files of 24, 10 and 5 samples; sample i of a file is labelled label0 + i."""
    d = tmp_path_factory.mktemp("concat")
    paths = []
    for name, (n, T, label0) in SIZES.items():
        samples = []
        for i in range(n):
            rng = np.random.default_rng(label0 + i)
            frames = [webp(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(T)]
            samples.append(Sample(FrameList(frames, 24, 32), label0 + i, {}))
        write_beton(d / f"{name}.beton", samples)
        paths.append(str(d / f"{name}.beton"))
    return paths


def test_concat_schedule_spreads_each_file_over_the_epoch() -> None:
    sizes = [24, 10, 5]
    for B, drop_last in [(6, True), (6, False), (7, True), (39, True), (1, False)]:
        counts = concat_schedule(sizes, B, drop_last)
        total = sum(sizes)
        assert len(counts) == (total // B if drop_last else -(-total // B))
        full = counts[: total // B]
        assert (full.sum(axis=1) == B).all()
        if not drop_last:
            assert counts.sum(axis=0).tolist() == sizes  # every sample once
        else:
            assert (counts.sum(axis=0) <= sizes).all() and counts.sum() == len(counts) * B
        # Each batch: the file's share of B, rounded up or down, give or take one.
        share = B * np.array(sizes) / total
        assert (np.abs(full - share) < 2).all()
        # The running totals stay within one sample of the proportional ones.
        running = np.cumsum(counts, axis=0)
        ideal = np.cumsum(counts.sum(axis=1))[:, None] * np.array(sizes) / total
        assert (np.abs(running - ideal) <= 1).all()


def _epoch(loader) -> list[tuple[int, int, int]]:
    """(file, index, label) of every sample of one epoch, checking each batch's shares."""
    seen = []
    for t, batch in enumerate(loader):
        assert batch.views.shape[1:] == (2, 3, 16, 16)
        files, indices, labels = batch.files.tolist(), batch.indices.tolist(), batch.labels
        shares = loader.schedule[t].tolist()
        assert np.bincount(files, minlength=len(shares)).tolist() == shares
        seen += list(zip(files, indices, labels.tolist(), strict=True))
    return seen


@pytest.mark.parametrize("drop_last", [False, True])
def test_one_epoch_visits_every_sample_of_every_file_once(files, drop_last: bool) -> None:
    # Every file without drop_last; two with it (39 or 34 samples, batches of 6).
    paths = files if not drop_last else files[:2]
    sizes = [v[0] for v in SIZES.values()][: len(paths)]
    label0 = [v[2] for v in SIZES.values()]
    loader = make_loader(
        paths, 6, num_workers=2, resolution=16, mix="concat", drop_last=drop_last, seed=4
    )
    total = sum(sizes)
    assert len(loader) == (total // 6 if drop_last else -(-total // 6))
    assert loader.batch_size == 6
    epochs = []
    for _ in range(2):  # two epochs, each a full pass
        seen = _epoch(loader)
        pairs = [(f, i) for f, i, _ in seen]
        assert len(pairs) == len(set(pairs))  # nothing twice
        want = {(f, i) for f, n in enumerate(sizes) for i in range(n)}
        assert len(want - set(pairs)) == (total % 6 if drop_last else 0)
        for f, i, label in seen:  # each sample's own label, offset as its file says
            assert label == label0[f] + i + loader.label_offsets[f]
        epochs.append(pairs)
    assert epochs[0] != epochs[1]  # a new order every epoch


def test_concat_shares_ranks_and_refuses_weights(files) -> None:
    kw = dict(num_workers=1, resolution=16, mix="concat", distributed=True, world_size=2)
    pair = [files[1], files[2]]  # 10 and 5 samples
    per_rank = []
    for rank in (0, 1):
        loader = make_loader(pair, 4, rank=rank, drop_last=False, **kw)
        assert len(loader) == 2  # shares of 5 and 3 (padded by wrapping): 8 per rank
        per_rank.append({(f, i) for f, i, _ in _epoch(loader)})
    assert len(per_rank[0] | per_rank[1]) == 15  # both ranks together: every sample
    with pytest.raises(ValueError, match="mix='concat' takes every file whole"):
        make_loader([files[0], (files[1], 0.3)], 4, num_workers=1, mix="concat")
    with pytest.raises(ValueError, match="mix must be one of"):
        make_loader(files, 4, num_workers=1, mix="concatenate")
    with pytest.raises(ValueError, match="fewer than batch_size=40"):
        make_loader(files, 40, num_workers=1, mix="concat")
