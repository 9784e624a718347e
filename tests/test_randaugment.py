"""RandAugment off the step's critical path (vicmae/engine/randaugment.py): timm's ops and
levels, one draw per sample applied to every frame of a clip, and the threaded loader
giving exactly what inline augmentation would, whatever the thread count."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from media import make_tiny_beton

from vicmae.engine.randaugment import NEGATED, ClipRandAugment, RandAugmentLoader, _level_args
from vicmae_data import make_loader

CONFIG = "rand-m9-mstd0.5-inc1"  # Table 6 "RandAug (9, 0.5)" as the authors' image_finetune.py


@pytest.mark.parametrize("increasing", [True, False])
def test_levels_equal_timms_for_every_op_and_magnitude(increasing: bool) -> None:
    from timm.data.auto_augment import LEVEL_TO_ARG, rand_augment_choices

    hparams = {"translate_const": 100, "img_mean": (124, 116, 104)}
    for name in rand_augment_choices("", increasing=increasing):
        for m in np.linspace(0, 10, 21).tolist():
            for seed in range(4):
                random.seed(seed)
                negate = random.random() > 0.5  # what timm's _randomly_negate will draw
                random.seed(seed)
                fn = LEVEL_TO_ARG[name]
                want = fn(m, hparams) if fn is not None else ()
                got = _level_args(name, m, hparams, negate and name in NEGATED)
                assert got == pytest.approx(want), (name, m, seed)


def _clip(t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, 32, 32, 3), dtype=np.uint8)


def test_one_draw_for_every_frame_of_a_clip() -> None:
    ra = ClipRandAugment(CONFIG, 32)
    frames = _clip(4)
    changed = 0
    for s in range(40):
        out = ra(frames, (s,))
        # Each frame got exactly what it gets as a clip of one with the same draw.
        for t in range(4):
            np.testing.assert_array_equal(out[t], ra(frames[t : t + 1], (s,))[0])
        same = ra(np.repeat(frames[:1], 4, axis=0), (s,))
        assert all(np.array_equal(same[0], f) for f in same)
        changed += not np.array_equal(out, frames)
    assert changed > 20  # two ops at p 0.5 each: most samples change


def test_draws_are_per_sample_and_reproducible() -> None:
    ra = ClipRandAugment(CONFIG, 32)
    frames = _clip(1)
    outs = {ra(frames, (0, 0, 0, i)).tobytes() for i in range(30)}
    assert len(outs) > 15  # another sample index, another draw
    np.testing.assert_array_equal(ra(frames, (0, 0, 0, 7)), ra(frames, (0, 0, 0, 7)))
    names = [len(ra.draw((0, 0, 0, i))) for i in range(400)]
    assert 0.8 < np.mean(names) < 1.2  # 2 layers, each applied with p 0.5 (timm's default)


def test_posterize_to_no_bits_is_black_not_an_error() -> None:
    """timm's posterize hands Pillow 0 bits at magnitude 10, which Pillow 13 refuses."""
    ra = ClipRandAugment("rand-m10-n1-p1.0-inc1", 16)  # one op, always, at magnitude 10
    frames = _clip(2, seed=3)[:, :16, :16]
    seen = 0
    for s in range(200):
        ((fn, args, _),) = ra.draw((s,))
        if fn.__name__ == "_no_bits":
            seen += 1
            assert args == (0,)
            assert not ra(frames, (s,)).any()  # every bit masked away, every frame
    assert seen > 0


def test_unsupported_ops_are_refused() -> None:
    with pytest.raises(ValueError, match="not supported"):
        ClipRandAugment("rand-m9-t3a", 32)


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    return str(make_tiny_beton(tmp_path_factory.mktemp("ra") / "tiny.beton", n=16))


def _inline(beton: str, ra: ClipRandAugment, epoch: int) -> list[torch.Tensor]:
    """What the step would compute itself: each sample of each batch through ``ra``."""
    loader = make_loader(beton, 4, num_workers=1, num_views=1, resolution=32, seed=3)
    loader.set_epoch(epoch)
    out = []
    for batch in loader:
        views = batch.views.permute(0, 1, 3, 4, 2)  # (B, V, H, W, 3)
        rows = [ra(views[b].numpy(), (3, epoch, int(batch.files[b]), int(batch.indices[b])))
                for b in range(len(views))]  # fmt: skip
        out.append(torch.from_numpy(np.stack(rows)).permute(0, 1, 4, 2, 3))
    return out


@pytest.mark.parametrize("threads", [1, 3])
def test_the_threaded_loader_equals_inline_augmentation(beton, threads: int) -> None:
    ra = ClipRandAugment(CONFIG, 32)
    want = _inline(beton, ra, epoch=1)
    loader = make_loader(beton, 4, num_workers=1, num_views=1, resolution=32, seed=3)
    wrapped = RandAugmentLoader(loader, ra, threads=threads, seed=3)
    assert len(wrapped) == len(loader) == 4
    wrapped.set_epoch(1)
    got = list(wrapped)
    assert len(got) == 4
    for g, w in zip(got, want, strict=True):
        assert g.views.shape == (4, 1, 3, 32, 32) and g.views.dtype == torch.uint8
        torch.testing.assert_close(g.views, w, rtol=0, atol=0)
    # Another epoch, other draws (the loader's crops differ too).
    wrapped.set_epoch(2)
    assert not all(torch.equal(a.views, b.views) for a, b in zip(wrapped, got, strict=True))
    wrapped.close()
