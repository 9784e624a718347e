"""`synth --style texture`: the class is a pattern; colours and geometry drift within clips.

What the demo relies on, checked on the pixels: colour statistics (what a random encoder's
features mostly carry) say nothing about the class, the colours of a clip's two halves
(the frames distant sampling pairs) are unrelated, and yet the class is in every frame.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_cli.data_synth import STYLES as CLI_STYLES
from vicmae_data.synth.dataset import STYLES, synth_dataset
from vicmae_data.synth.textures import PATTERNS, render_texture_clip

CLASSES = 5  # as the demo's kinetics400 layout


def _clips(n_per_class: int, frames: int = 8, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return [
        (render_texture_clip(c, frames, 48, 64, seed=int(rng.integers(2**31))), c)
        for _ in range(n_per_class)
        for c in range(CLASSES)
    ]


def _nearest_mean_accuracy(train, val) -> float:
    """Top-1 of a nearest-class-mean classifier on feature vectors [(x, label)]."""
    means = np.stack([np.mean([x for x, y in train if y == k], axis=0) for k in range(CLASSES)])
    return float(np.mean([np.argmin(((means - x) ** 2).sum(1)) == y for x, y in val]))


def _colour_stats(frame: np.ndarray) -> np.ndarray:
    """Mean and spread of each channel, and a 4x4 grid of cell means: [6 + 48]."""
    f = frame.astype(np.float32)
    h, w = f.shape[0] // 4 * 4, f.shape[1] // 4 * 4
    cells = f[:h, :w].reshape(4, h // 4, 4, w // 4, 3).mean(axis=(1, 3))
    return np.concatenate([f.mean((0, 1)), f.std((0, 1)), cells.ravel()])


def _texture_stats(frame: np.ndarray) -> np.ndarray:
    """Luminance gradient energy of the centre at 1-, 2- and 4-pixel steps, contrast-normed."""
    g = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    h, w = g.shape
    g = g[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
    feats = []
    for step in (1, 2, 4):
        dy = np.abs(g[step:, :] - g[:-step, :]).mean()
        dx = np.abs(g[:, step:] - g[:, :-step]).mean()
        feats.append(dy + dx)
    feats = np.array(feats)
    return feats / feats.sum()


def test_render_is_deterministic_shaped_and_checked():
    a = render_texture_clip(3, 6, 40, 52, seed=1)
    assert a.shape == (6, 40, 52, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_texture_clip(3, 6, 40, 52, seed=1))
    assert not np.array_equal(a, render_texture_clip(3, 6, 40, 52, seed=2))
    assert render_texture_clip(0, 1, 30, 30).shape == (1, 30, 30, 3)  # an image
    assert len(set(PATTERNS)) == len(PATTERNS) == 7  # the most classes of any layout
    with pytest.raises(ValueError):
        render_texture_clip(0, 0, 40, 50)


def test_colour_says_nothing_about_the_class():
    """A colour classifier that solves `--style colour` is at chance on textures."""
    train, val = _clips(20, seed=0), _clips(20, seed=1)
    acc = _nearest_mean_accuracy(
        [(_colour_stats(c[0]), y) for c, y in train], [(_colour_stats(c[0]), y) for c, y in val]
    )
    assert acc <= 1 / CLASSES + 0.15, acc  # 100 val clips: chance +- about 0.08 (2 sd)
    # ... while a texture statistic (how fast luminance changes at three scales) beats it:
    # the class is in the pixels, for a feature invariant to colour.
    acc_tex = _nearest_mean_accuracy(
        [(_texture_stats(c[0]), y) for c, y in train], [(_texture_stats(c[0]), y) for c, y in val]
    )
    assert acc_tex >= acc + 0.15, (acc_tex, acc)


def test_distant_frames_share_the_class_and_little_else():
    """Colours of the first and last frame of a clip are nearly uncorrelated across clips."""
    clips = _clips(12, frames=16, seed=2)
    first = np.stack([_colour_stats(c[0])[:3] for c, _ in clips])  # mean RGB [n, 3]
    last = np.stack([_colour_stats(c[-1])[:3] for c, _ in clips])
    corr = [np.corrcoef(first[:, k], last[:, k])[0, 1] for k in range(3)]
    assert max(abs(r) for r in corr) < 0.5, corr
    # Within a clip the drift is smooth: the mean colour moves little from frame to frame.
    clip = render_texture_clip(1, 64, 48, 64, seed=5)
    means = np.stack([_colour_stats(f)[:3] for f in clip])  # [T, 3]
    step = np.median(np.abs(np.diff(means, axis=0)).max(axis=1))
    span = np.abs(means - means[0]).max()
    assert step < span / 10, (step, span)


def test_synth_style_texture_and_the_cli(tmp_path):
    assert CLI_STYLES == tuple(STYLES)
    summary = synth_dataset("kinetics400", tmp_path / "k", videos=5, style="texture")
    assert [i.label for i in summary.written("train")] == list(range(5))
    with pytest.raises(ValueError, match="unknown style"):
        synth_dataset("kinetics400", tmp_path / "x", videos=1, style="plaid")
    runner = CliRunner()
    ok = runner.invoke(
        app,
        ["synth", "--layout", "imagenet", "--out", str(tmp_path / "i"), "--videos", "4",
         "--style", "texture"],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(
        app, ["synth", "--layout", "mit", "--out", str(tmp_path / "m"), "--style", "plaid"]
    )
    assert bad.exit_code == 2 and "unknown style" in bad.stderr
    assert not (tmp_path / "m").exists()  # refused before anything was written
