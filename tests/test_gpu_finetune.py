"""benchmarks/gpu_finetune.py: the FLOP formula its MFU divides by, against FlopCounterMode.

The GPU run reports MFU = 3 F x samples/s / peak with F from a formula; here F is checked
against torch's own count of the real fine-tune models (the inflated video ViT and the 2-D
ViT under their heads), small enough for a CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_finetune import (  # noqa: E402
    count_flops,
    embed_flops,
    forward_flops,
    train_flops,
    vit_shape,
)

from vicmae.jobs.finetune import Classifier  # noqa: E402
from vicmae.model.video_vit import inflate  # noqa: E402
from vicmae.model.vit import ViTEncoder  # noqa: E402


@pytest.mark.parametrize(("frames", "tubelet"), [(4, 2), (1, 1)], ids=["clips", "images"])
def test_flop_formula_is_what_flop_counter_counts(frames, tubelet):
    torch.manual_seed(0)
    encoder = ViTEncoder.from_arch("vit_pico_patch8", 32)
    model = Classifier(inflate(encoder, frames, tubelet) if frames > 1 else encoder, 10)
    shape = vit_shape("vit_pico_patch8", 32, 10, frames, tubelet)
    assert shape.tokens == frames // tubelet * 16 + 1  # (32 / 8)^2 patches per time step
    x = torch.randn(3, 3, frames, 32, 32) if frames > 1 else torch.randn(3, 3, 32, 32)
    forward, step = count_flops(model, x)
    assert forward == 3 * forward_flops(shape)
    # The backward pass doubles every product but the embedding's: no gradient is taken
    # for the input pixels, only for the embedding's weights.
    assert step == 3 * (train_flops(shape) - embed_flops(shape))
    assert all(p.grad is None for p in model.parameters())  # counting leaves no gradients


def test_vit_b_clip_flops_are_the_documented_ones():
    clip = vit_shape("vit_base_patch16", 224, 400, frames=16, tubelet=2)
    assert clip.tokens == 8 * 14 * 14 + 1
    assert forward_flops(clip) / 1e9 == pytest.approx(361.0, abs=0.05)
    assert train_flops(clip) / 1e9 == pytest.approx(1082.9, abs=0.05)
    image = vit_shape("vit_base_patch16", 224, 1000)
    assert forward_flops(image) / 1e9 == pytest.approx(35.1, abs=0.05)
