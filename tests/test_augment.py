"""Strong colour augmentation per view: the paper's symmetric set and the authors' asymmetric one.

Statistics over many rows (what each view of each kind of row got), each operation against a
reference (torchvision's blur, FFCV-SSL's solarisation and grey), and the wiring of
``to_model_input``: view v gets view v's settings, on image rows or on every row.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from vicmae_data.load.augment import (
    AUTHORS_VIEWS,
    PAPER_VIEWS,
    AugmentDraws,
    ViewAugment,
    apply_view_augment,
    draw_view_augment,
    to_model_input,
)
from vicmae_data.load.batch import Batch

ROWS = 20_000  # the estimates below are within ~5 standard errors at this count


def _rates(cfg: ViewAugment, seed: int) -> dict[str, float]:
    d = draw_view_augment(ROWS, cfg, generator=torch.Generator().manual_seed(seed))
    return {k: getattr(d, k).float().mean().item() for k in ("jitter", "gray", "blur", "solarize")}


def test_asymmetric_draws_are_the_authors() -> None:
    """pretrain.py: jitter 0.8 and grayscale 0.2 on both views; blur on every view-1 row and
    no view-2 row; solarisation on ~20% of view-2 rows and no view-1 row."""
    v1, v2 = _rates(AUTHORS_VIEWS[0], 0), _rates(AUTHORS_VIEWS[1], 1)
    assert v1["blur"] == 1.0 and v2["blur"] == 0.0
    assert v1["solarize"] == 0.0 and v2["solarize"] == pytest.approx(0.2, abs=0.015)
    for rates in (v1, v2):
        assert rates["jitter"] == pytest.approx(0.8, abs=0.015)
        assert rates["gray"] == pytest.approx(0.2, abs=0.015)
    d = draw_view_augment(ROWS, AUTHORS_VIEWS[0], generator=torch.Generator().manual_seed(2))
    assert 0.1 <= d.sigma.min() and d.sigma.max() <= 2.0  # sigma (0.1, 2)
    assert d.sigma.mean().item() == pytest.approx(1.05, abs=0.02)  # uniform
    assert AUTHORS_VIEWS[0].blur_kernel == (5, 9)
    amounts = d.factors[:, :3].sub(1).abs().amax(0)
    assert torch.allclose(amounts, torch.tensor([0.4, 0.4, 0.2]), atol=1e-3)
    assert d.factors[:, 3].abs().max().item() == pytest.approx(0.1, abs=1e-3)  # hue 0.1


def test_symmetric_draws_are_the_same_on_both_views() -> None:
    assert PAPER_VIEWS[0] == PAPER_VIEWS[1]
    rates = _rates(PAPER_VIEWS[0], 3)
    assert rates["blur"] == pytest.approx(0.5, abs=0.015)
    assert rates["solarize"] == 0.0  # the paper names no solarisation
    assert rates["jitter"] == pytest.approx(0.8, abs=0.015)
    assert rates["gray"] == pytest.approx(0.2, abs=0.015)


def _white_batch(n: int, is_image: torch.Tensor) -> Batch:
    return Batch(torch.full((n, 2, 3, 12, 12), 255, dtype=torch.uint8), torch.zeros(n), is_image)


def _solarized(x: torch.Tensor) -> torch.Tensor:
    """Rows (B, V) whose white input came out solarised.

    A white image stays >= 0.6 under jitter (brightness >= 0.6; uniform images are fixed
    points of contrast, saturation, hue, grey and blur), so it drops below 0.5 only by
    solarisation: the statistic is measured on what ``to_model_input`` returns.
    """
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
    pixels = x * std + mean  # (B, V, 3, H, W) back in [0, 1]
    return pixels.mean(dim=(2, 3, 4)) < 0.5


@pytest.mark.parametrize("rows", ["images", "all"])
def test_solarisation_through_to_model_input_per_view_and_kind_of_row(rows: str) -> None:
    n = 4000
    is_image = torch.arange(n) % 2 == 0  # half images, half video frames
    x = to_model_input(
        _white_batch(n, is_image), "cpu", generator=torch.Generator().manual_seed(4),
        views="asymmetric", rows=rows,
    )  # fmt: skip
    sol = _solarized(x)  # (n, 2)
    assert not sol[:, 0].any()  # never on view 1
    assert sol[is_image, 1].float().mean().item() == pytest.approx(0.2, abs=0.03)
    if rows == "images":  # video frames get crops and flips only (the paper)
        assert not sol[~is_image].any()
        assert torch.equal(
            x[~is_image],
            to_model_input(_white_batch(n, is_image), "cpu", image_augment=False)[~is_image],
        )
    else:  # the authors' pipeline treats every row alike
        assert sol[~is_image, 1].float().mean().item() == pytest.approx(0.2, abs=0.03)
    sym = to_model_input(
        _white_batch(n, is_image), "cpu", generator=torch.Generator().manual_seed(5)
    )
    assert not _solarized(sym).any()


def test_to_model_input_gives_view_v_its_own_settings() -> None:
    g = torch.Generator().manual_seed(6)
    views = torch.randint(0, 256, (6, 2, 3, 12, 12), dtype=torch.uint8, generator=g)
    is_image = torch.tensor([True, False, True, True, False, True])
    batch = Batch(views, torch.zeros(6), is_image)
    got = to_model_input(
        batch, "cpu", generator=torch.Generator().manual_seed(7), views="asymmetric"
    )
    # the same draws, replayed by hand: view 0 with the authors' view-1 set, then view 1
    gen = torch.Generator().manual_seed(7)
    x = views.float() / 255
    want = x.clone()
    for v in range(2):
        d = draw_view_augment(int(is_image.sum()), AUTHORS_VIEWS[v], generator=gen)
        want[is_image, v] = apply_view_augment(x[is_image, v], d, AUTHORS_VIEWS[v])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(got, (want - mean) / std)
    with pytest.raises(ValueError, match="rows"):
        to_model_input(batch, "cpu", rows="videos")


def _draws(n: int, **on: torch.Tensor) -> AugmentDraws:
    """Draws that switch on only the named operations (identity factors otherwise)."""
    off = torch.zeros(n, dtype=torch.bool)
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(n, 1)
    fields = dict(
        jitter=off, factors=factors, gray=off, blur=off, sigma=torch.ones(n), solarize=off
    )
    return AugmentDraws(**{**fields, **on})


def test_blur_is_torchvisions_with_the_authors_kernel() -> None:
    x = torch.rand(3, 3, 16, 20, generator=torch.Generator().manual_seed(8))
    sigma = torch.tensor([0.3, 1.0, 2.0])
    d = _draws(3, blur=torch.tensor([True, True, False]), sigma=sigma)
    got = apply_view_augment(x, d, AUTHORS_VIEWS[0])
    for i in range(2):  # torchvision's GaussianBlur(kernel_size=(5, 9)): 5 wide, 9 tall
        ref = gaussian_blur(x[i], kernel_size=[5, 9], sigma=[float(sigma[i])] * 2)
        torch.testing.assert_close(got[i], ref, atol=1e-6, rtol=1e-5)
    assert torch.equal(got[2], x[2])


def test_solarise_and_grey_are_ffcv_ssls() -> None:
    x = torch.arange(256, dtype=torch.float32).div(255).view(1, 1, 16, 16).repeat(2, 3, 1, 1)
    d = _draws(2, solarize=torch.tensor([True, False]))
    got = apply_view_augment(x, d, AUTHORS_VIEWS[1])
    u8 = torch.arange(256, dtype=torch.float32)
    ref = torch.where(u8 >= 128, 255 - u8, u8) / 255  # RandomSolarization(0.2, 128)
    torch.testing.assert_close(got[0, 0].flatten(), ref)
    assert torch.equal(got[1], x[1])
    rgb = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    grey = apply_view_augment(rgb, _draws(1, gray=torch.tensor([True])), AUTHORS_VIEWS[1])
    luma = 0.2989 * rgb[0, 0] + 0.587 * rgb[0, 1] + 0.114 * rgb[0, 2]
    for c in range(3):
        torch.testing.assert_close(grey[0, c], luma, atol=1e-3, rtol=0)
