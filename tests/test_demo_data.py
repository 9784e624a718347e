"""The demo's data: a randomly initialised encoder's linear probe stays near chance on it.

`make demo` must prove that pretraining learns, so its data must not be solved by random
weights (issue 8 item 5). This runs the demo's own pipeline (scripts/demo.sh: `synth
--style texture`, the converter at short side 64, the architecture and resolution of
vicmae/configs/demo_cpu.yaml, the cached Table 7 probe on the class token) on fewer clips.
The same random encoder through the same probe solves the colour style, so the probe and
the features work, and it is the texture data that holds random features near chance.
The lift pretraining gives on this data is what `make demo` prints (docs/demo.md: three seeds).
"""

from __future__ import annotations

import pytest

from vicmae.config import LinprobeConfig, load_config
from vicmae.jobs.linprobe import linprobe
from vicmae_data.synth.dataset import synth_dataset
from vicmae_data.write.convert import convert

CLIPS = 60  # per split: 12 per class, so chance is 20% +- about 5 points (1 sd)
DEMO = load_config("demo_cpu", ["data.betons=[unused.beton]"])


def _random_init_probe(tmp_path, style: str) -> dict:
    root = tmp_path / style
    synth_dataset("kinetics400", root / "k400", videos=CLIPS, seed=1, style=style)
    betons = {}
    for split in ("train", "val"):
        betons[split] = root / f"{split}.beton"
        convert("kinetics400", root / "k400", betons[split], split=split, workers=1,
                short_side=DEMO.data.resolution)  # fmt: skip
    cfg = load_config(
        None,
        [f"model.arch={DEMO.model.arch}", "model.random_init=true", "probe.cached=true",
         f"data.resolution={DEMO.data.resolution}", f"data.betons=[{betons['train']}]",
         f"data.val_beton={betons['val']}", f"run.out={root / 'probe'}", "run.progress=false",
         "data.num_workers=1"],
        cls=LinprobeConfig,
    )  # fmt: skip
    return linprobe(cfg)


@pytest.mark.slow
def test_random_encoder_probe_is_near_chance_on_the_demo_data(tmp_path):
    result = _random_init_probe(tmp_path, "texture")
    assert result["num_classes"] == 5 and result["val_samples"] == CLIPS and result["random_init"]
    assert result["val_top1"] <= 40.0, result["val_top1"]  # at most 2x chance


@pytest.mark.slow
def test_the_same_probe_solves_the_colour_style(tmp_path):
    """The control: a random encoder's features do separate classes that differ in colour."""
    result = _random_init_probe(tmp_path, "colour")
    assert result["val_top1"] >= 80.0, result["val_top1"]
