"""make_loader: reproducibility, rank shares, mixing by weight, image augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from media import webp

from vicmae_data import make_loader
from vicmae_data.format.beton import BetonError, BetonFile, Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.load.augment import IMAGENET_MEAN, IMAGENET_STD, to_model_input
from vicmae_data.load.batch import Batch
from vicmae_data.load.loader import split_batch
from vicmae_data.load.order import block_shuffle_order
from vicmae_data.write.beton_writer import write_beton

RES = 16


def write(path, n: int, T: int, label0: int) -> str:
    """``n`` samples of ``T`` frames (24x32), labels ``label0 + i``."""
    samples = []
    for i in range(n):
        rng = np.random.default_rng(label0 + i)
        frames = [webp(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(T)]
        samples.append(Sample(FrameList(frames, 24, 32), label0 + i, {}))
    write_beton(path, samples)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("loader")
    return {
        "videos": write(d / "videos.beton", 24, 6, 0),
        "images": write(d / "images.beton", 5, 1, 100),
    }


def epoch_batches(loader) -> list[Batch]:
    return [Batch(*(t.clone() for t in b)) for b in loader]


@pytest.fixture(scope="module")
def ranks(files):
    kw = dict(num_workers=2, resolution=RES, distributed=True, world_size=2, seed=9)
    return [make_loader(files["videos"], 4, rank=r, **kw) for r in (0, 1)]


def test_ranks_are_disjoint_cover_the_epoch_and_change(ranks) -> None:
    shares = []
    for epoch in (0, 1):
        per_rank = []
        for loader in ranks:
            loader.set_epoch(epoch)
            assert len(loader) == 3  # 24 samples / 2 ranks / batch 4
            per_rank.append({int(x) for b in loader for x in b.labels})
        assert per_rank[0].isdisjoint(per_rank[1])
        assert per_rank[0] | per_rank[1] == set(range(24))
        shares.append(per_rank[0])
    assert shares[0] != shares[1]


def test_same_seed_same_batches_run_after_run(files, ranks) -> None:
    ranks[0].set_epoch(0)
    first = epoch_batches(ranks[0])
    ranks[0].set_epoch(0)
    again = epoch_batches(ranks[0])
    fresh = make_loader(
        files["videos"],
        4,
        num_workers=2,
        resolution=RES,
        distributed=True,
        rank=0,
        world_size=2,
        seed=9,
        memory="os_cache",
    )  # fmt: skip; the memory-mapped reader must not change a thing
    other = epoch_batches(fresh)
    for a, b, c in zip(first, again, other, strict=True):
        for x, y, z in zip(a, b, c, strict=True):
            assert torch.equal(x, y) and torch.equal(x, z)
    assert fresh.epoch == 1  # iterating ran epoch 0 and moved on


def test_mixing_by_weight(files) -> None:
    loader = make_loader(
        [files["videos"], (files["images"], 0.5)], 6, num_workers=2, resolution=RES, seed=1
    )
    assert len(loader) == 24 // 4  # the first file (4 of every 6) defines the epoch
    image_labels = []
    for batch in loader:
        assert batch.views.shape == (6, 2, 3, RES, RES)
        assert int(batch.is_image.sum()) == 2  # round(6 * 0.5 / 1.5)
        assert (batch.labels[batch.is_image] >= 100).all()
        assert (batch.labels[~batch.is_image] < 100).all()
        image_labels += batch.labels[batch.is_image].tolist()
    assert set(image_labels) == set(range(100, 105))  # the small file cycled (12 > 5)


def test_batches_carry_sample_indices_and_files(files) -> None:
    """Labels were written as label0 + index, so each row's label names its index."""
    loader = make_loader(
        [files["videos"], (files["images"], 0.5)], 6, num_workers=2, resolution=RES, seed=4
    )
    seen = set()
    for batch in loader:
        assert batch.indices.dtype == torch.int64 and batch.files.dtype == torch.int64
        assert torch.equal(batch.files == 1, batch.is_image)
        label0 = torch.where(batch.files == 1, 100, 0)
        assert torch.equal(batch.labels, label0 + batch.indices)
        seen |= set(batch.indices[batch.files == 0].tolist())
    assert seen == set(range(24))


def test_split_batch() -> None:
    assert split_batch(256, [1.0]) == [256]
    assert split_batch(10, [1.0, 0.3]) == [8, 2]
    assert split_batch(3, [1.0, 1.0, 1.0]) == [1, 1, 1]
    assert sum(split_batch(7, [0.2, 0.5, 0.3])) == 7


def test_block_shuffle_order_pages_ranks_epochs() -> None:
    indices = np.arange(1000)
    pages = indices // 50  # 20 pages of 50 samples
    kw = dict(seed=0, epoch=0, world_size=3, window=100)
    parts = [block_shuffle_order(indices, pages, rank=r, **kw) for r in range(3)]
    assert all(len(p) == 334 for p in parts)  # padded to equal shares
    assert set(np.concatenate(parts)) == set(range(1000))
    assert len(set(parts[0]) & set(parts[1])) == 0
    # Page locality: any window of 100 consecutive samples touches few pages.
    for p in parts:
        for s in range(0, 300, 100):
            assert len(set(pages[p[s : s + 100]])) <= 4
    nxt = block_shuffle_order(indices, pages, rank=0, **{**kw, "epoch": 1})
    assert set(nxt) != set(parts[0])
    same = block_shuffle_order(indices, pages, rank=0, **kw)
    assert (same == parts[0]).all()


def test_strong_augment_only_touches_image_rows() -> None:
    g = torch.Generator().manual_seed(0)
    views = torch.randint(0, 256, (4, 2, 3, 20, 20), dtype=torch.uint8, generator=g)
    is_image = torch.tensor([True, False, True, False])
    batch = Batch(views, torch.arange(4), is_image)
    plain = to_model_input(batch, "cpu", image_augment=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(plain, (views.float() / 255 - mean) / std)
    aug = to_model_input(batch, "cpu", generator=torch.Generator().manual_seed(1))
    assert aug.shape == (4, 2, 3, 20, 20) and aug.dtype == torch.float32
    assert torch.equal(aug[~is_image], plain[~is_image])
    assert not torch.allclose(aug[is_image], plain[is_image])
    again = to_model_input(batch, "cpu", generator=torch.Generator().manual_seed(1))
    assert torch.equal(aug, again)


def test_bad_paths_and_arguments(files, tmp_path) -> None:
    with pytest.raises(BetonError):
        make_loader(tmp_path / "missing.beton", 4, num_workers=1)
    with pytest.raises(BetonError, match=r"is a folder, not a file"):
        make_loader(tmp_path, 4, num_workers=1)
    with pytest.raises(ValueError):
        make_loader(files["videos"], 4, num_workers=1, sampling="nearest")
    junk = tmp_path / "junk.beton"
    junk.write_bytes(b"not a beton at all" * 10)
    with pytest.raises(BetonError):
        make_loader(junk, 4, num_workers=1)


def _named(path, dataset: str, classes: list[str], T: int) -> str:
    """One sample per class of ``dataset``, labels 0..len(classes)-1, names in the meta."""
    samples = []
    for i, name in enumerate(classes):
        rng = np.random.default_rng(i)
        frames = [webp(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(T)]
        meta = {"source": f"{dataset}/{i}", "class_name": name, "dataset": dataset}
        samples.append(Sample(FrameList(frames, 24, 32), i, meta))
    write_beton(path, samples * 2)
    return str(path)


def test_mixing_datasets_offsets_labels_as_merge_does(tmp_path) -> None:
    from vicmae_data.write.merge import merge

    videos = _named(tmp_path / "k.beton", "kinetics400", ["abseiling", "bowling", "curling"], 3)
    images = _named(tmp_path / "i.beton", "imagenet", ["tench", "goldfish"], 1)
    kw = dict(num_workers=1, resolution=RES, seed=2)
    with pytest.warns(UserWarning, match="different class lists"):
        merged = BetonFile(merge([videos, images], tmp_path / "m.beton").out)
    n_videos = len(BetonFile(videos))
    for relabel, want in (("auto", (0, 3)), ("keep", (0, 0)), ([0, 1000], (0, 1000))):
        loader = make_loader([videos, images], 4, relabel=relabel, **kw)
        assert loader.label_offsets == want
        for batch in loader:
            stored = torch.where(batch.files == 0, batch.indices % 3, batch.indices % 2)
            assert torch.equal(batch.labels, stored + torch.tensor(want)[batch.files])
            if relabel == "auto":  # the very labels the merged file holds
                rows = batch.indices + batch.files * n_videos
                assert batch.labels.tolist() == [int(merged.labels[int(r)]) for r in rows]
    with pytest.raises(ValueError, match="one offset >= 0 per file"):
        make_loader([videos, images], 4, relabel=[5], **kw)


def test_too_many_workers_are_clamped_with_a_warning(files) -> None:
    import numba

    cores = numba.config.NUMBA_NUM_THREADS
    with pytest.warns(UserWarning, match=rf"num_workers={cores + 14} is more than the {cores}"):
        loader = make_loader(files["videos"], 4, num_workers=cores + 14, resolution=RES)
    assert sum(len(b.labels) for b in loader) == 24


def test_a_batch_larger_than_the_data_says_which_size_fits(files) -> None:
    with pytest.raises(ValueError, match=r"24 samples is fewer than its share.*batch_size=24"):
        make_loader(files["videos"], 25, num_workers=1, resolution=RES)
    kw = dict(num_workers=1, resolution=RES, distributed=True, rank=0, world_size=4)
    with pytest.raises(ValueError, match=r"6 samples per rank \(4 ranks\).*batch_size=6 or less"):
        make_loader(files["videos"], 8, **kw)
    with pytest.raises(ValueError, match=r"images.beton: 5 samples.*batch_size=\d+ or less"):
        make_loader([files["videos"], (files["images"], 1.0)], 12, num_workers=1, resolution=RES)
    assert len(make_loader(files["videos"], 25, num_workers=1, drop_last=False, resolution=RES))


def _arrays(tree) -> list[np.ndarray]:
    if isinstance(tree, np.ndarray):
        return [tree]
    items = tree.values() if isinstance(tree, dict) else tree or ()
    return [a for item in items for a in _arrays(item)]


def test_every_epoch_reuses_one_set_of_buffers(files) -> None:
    """ffcv allocates (and, where CUDA is present, pins) every buffer anew each epoch; the
    loader allocates them once: every epoch's views lie in the buffers it holds, and the
    batches are those of a loader that starts at that epoch."""
    kw = dict(num_workers=2, resolution=RES, seed=4)
    loader = make_loader(files["videos"], 4, **kw)
    graph = loader.loaders[0].graph
    assert graph.buffers is None
    epoch_batches(loader)  # epoch 0 allocates
    spans = [(a.ctypes.data, a.ctypes.data + a.nbytes) for a in _arrays(graph.buffers)]
    for epoch in (1, 2):
        fresh = make_loader(files["videos"], 4, epoch=epoch, **kw)
        for batch, expected in zip(loader, epoch_batches(fresh), strict=True):
            address = batch.views.data_ptr()
            assert any(lo <= address < hi for lo, hi in spans)
            assert torch.equal(batch.views, expected.views)


def test_the_callers_torch_threads_are_left_alone(files) -> None:
    """ffcv sets torch's intra-op threads to the loader's worker count; we do not."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        loader = make_loader(files["videos"], 4, num_workers=2, resolution=RES)
        assert torch.get_num_threads() == 1
        for _ in loader:
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches(files) -> None:
    kw = dict(num_workers=2, resolution=RES, seed=5)
    paths = [files["videos"], (files["images"], 0.5)]
    cpu = epoch_batches(make_loader(paths, 6, **kw))
    gpu = [b for b in make_loader(paths, 6, device="cuda", **kw)]
    for a, b in zip(cpu, gpu, strict=True):
        for x, y in zip(a, b, strict=True):
            assert y.is_cuda and torch.equal(x, y.cpu())
