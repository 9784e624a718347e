"""Memory modes of make_loader: identical batches, and a resident-memory bound by batch size."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from media import webp

from vicmae_data import make_loader
from vicmae_data.format.beton import Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.load.batch import Batch
from vicmae_data.load.memory import MEMORY_MODES, BoundedMmapContext, mapped_rss_bytes
from vicmae_data.write.beton_writer import write_beton

RES = 16
PMD = 2 * 1024 * 1024  # the largest granule a file-backed fault maps on x86-64 and arm64


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> str:
    """20 samples of 5 frames and 4 images, 24x32: the identical-batches check."""
    path = tmp_path_factory.mktemp("memory") / "small.beton"
    samples = []
    for i in range(24):
        rng = np.random.default_rng(i)
        T = 1 if i % 6 == 0 else 5
        frames = [webp(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(T)]
        samples.append(Sample(FrameList(frames, 24, 32), i, {}))
    write_beton(path, samples)
    return str(path)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, int]:
    """~330 MB: 120 clips of 8 noise frames (480x640, ~340 KB each), of which the decoder
    reads 2. Returns (path, samples, bytes of the largest sample)."""
    path = tmp_path_factory.mktemp("memory") / "big.beton"
    rng = np.random.default_rng(0)
    pool = [
        webp(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), quality=100) for _ in range(8)
    ]
    samples = []
    for i in range(120):
        frames = [pool[(i + t) % len(pool)] for t in range(8)]
        samples.append(Sample(FrameList(frames, 480, 640), i % 10, {}))
    write_beton(path, samples)
    sample_bytes = 4 * 9 + sum(len(f) for f in pool)
    return str(path), len(samples), sample_bytes


def epoch(loader) -> list[Batch]:
    return [Batch(*(t.clone() for t in b)) for b in loader]


def test_batches_identical_in_every_memory_mode(small) -> None:
    kw = dict(num_workers=2, resolution=RES, seed=3, distributed=True, rank=1, world_size=2)
    runs = {mode: epoch(make_loader(small, 4, memory=mode, **kw)) for mode in MEMORY_MODES}
    first = runs.pop("mmap-bounded")
    assert len(first) == 3
    for other in runs.values():
        for a, b in zip(first, other, strict=True):
            for x, y in zip(a, b, strict=True):
                assert torch.equal(x, y)


def test_bad_memory_mode(small) -> None:
    with pytest.raises(ValueError, match="memory must be one of"):
        make_loader(small, 4, num_workers=1, memory="ram")
    with pytest.raises(TypeError, match="os_cache"):
        make_loader(small, 4, num_workers=1, os_cache=True)  # the old switch is gone


@pytest.mark.slow
def test_resident_memory_bounded_by_batch_not_file(big) -> None:
    path, n, sample_bytes = big
    B, V = 2, 2
    file_size = os.path.getsize(path)
    # A fault maps whole page-cache folios: 4 KiB pages plus up to 64 KiB around them for a
    # file read cold, up to 2 MiB (a PMD) for one just written. Whatever the granule, what a
    # sample maps lies in its own bytes rounded out to 2 MiB on both sides; two batches can
    # be mapped at once (the one being decoded, the one finished before the next drop).
    bound = 2 * B * (sample_bytes + 2 * PMD)
    assert bound < file_size / 10

    kw = dict(num_workers=2, resolution=RES, num_views=V, train=False)  # centre crops
    bounded = make_loader(path, B, memory="mmap-bounded", **kw)
    manager = bounded.loaders[0].memory_manager
    assert manager.drop_samples == 256  # the default: a drop per 256 samples decoded
    manager.drop_samples = B  # this file is 120 samples: drop before every batch
    context = manager.context
    assert isinstance(context, BoundedMmapContext)
    peak, batches = 0, 0
    for batch in bounded:
        peak = max(peak, mapped_rss_bytes(path))
        batches += 1
        # Yielded tensors are ffcv's output buffers, never views into the mapping.
        start = context.array.ctypes.data
        for t in batch:
            assert not start <= t.data_ptr() < start + context.array.size
    assert batches == n // B
    assert 0 < peak <= bound, (peak, bound)
    assert context.drops >= batches - 1
    assert mapped_rss_bytes(path) == 0  # the epoch's end dropped the rest

    plain = make_loader(path, B, memory="os_cache", **kw)
    for _ in plain:
        pass
    # Every byte the epoch decoded is still mapped: at least ~0.9 of 2 frames per sample
    # (centre crops), ~70 MB, more than twice the bound, whatever the granule.
    touched = mapped_rss_bytes(path)
    assert touched > 2 * bound, (touched, bound)
