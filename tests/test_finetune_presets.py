"""The fine-tuning presets: paper Table 6's K400, SSv2 and Places-365 rows (ViT-B, ViT-L),
every value sourced beside it, selected with ``vicmae train finetune --config NAME``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vicmae.config import ConfigError, FinetuneConfig, LinprobeConfig, builtin_configs, load_config
from vicmae_cli.train import app

CONFIGS = Path(__file__).resolve().parents[1] / "vicmae" / "configs"
PRESETS = ("k400_vitb", "k400_vitl", "ssv2_vitb", "ssv2_vitl", "places365_vitb", "places365_vitl")
runner = CliRunner()

# Table 6 as the paper prints it: (base lr, epochs, layer decay, batch, drop path); None
# where the table gives no value for the row (the preset names its other source).
TABLE_6 = {
    "k400_vitb": (1.6e-3, 150, 0.65, 1024, 0.1),
    "k400_vitl": (4.8e-3, 100, 0.75, 768, 0.2),
    "ssv2_vitb": (None, None, 0.65, 1024, 0.1),
    "ssv2_vitl": (1e-3, 40, 0.75, 768, 0.2),
    "places365_vitb": (None, 60, 0.65, 1024, 0.1),
    "places365_vitl": (2e-3, 50, 0.75, 768, 0.2),
}


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_table_6(name: str) -> None:
    c = load_config(name, cls=FinetuneConfig)
    lr, epochs, ld, batch, dp = TABLE_6[name]
    o, a = c.optim, c.augment
    assert (o.layer_decay, o.batch_size, c.model.drop_path) == (ld, batch, dp)
    if lr is not None:
        assert o.base_lr == lr
    if epochs is not None:
        assert o.epochs == epochs
    assert (o.name, o.betas, o.weight_decay, o.warmup_epochs) == ("adamw", (0.9, 0.999), 0.05, 5)
    assert (a.randaugment, a.mixup, a.label_smoothing) == ("rand-m9-mstd0.5-inc1", 0.8, 0.1)
    assert c.model.arch == ("vit_large_patch16" if name.endswith("l") else "vit_base_patch16")
    assert c.model.pool == "cls"  # appendix A


def test_video_presets_clips_and_test_views() -> None:
    k400, ssv2 = (
        load_config("k400_vitl", cls=FinetuneConfig),
        load_config("ssv2_vitl", cls=FinetuneConfig),
    )
    assert (k400.data.sampling, k400.data.clip_frames, k400.data.clip_stride) == ("clip", 16, 4)
    assert (k400.test.clips, k400.test.crops, k400.data.flip) == (7, 3, True)  # section 4
    assert (ssv2.data.sampling, ssv2.data.clip_frames, ssv2.data.flip) == ("segment", 16, False)
    assert (ssv2.test.clips, ssv2.test.crops) == (2, 3)  # VideoMAE's SSv2 scripts
    assert (k400.model.tubelet, k400.model.head_dropout) == (2, 0.3)
    places = load_config("places365_vitl", cls=FinetuneConfig)
    assert places.data.sampling == "distant" and (places.test.clips, places.test.crops) == (1, 1)


@pytest.mark.parametrize("name", PRESETS)
def test_every_value_names_its_source(name: str) -> None:
    """Each key line carries a comment; a comment that names no paper part or code base
    (Table, section, appendix, mae_st, VideoMAE, the authors') fails."""
    text = (CONFIGS / f"{name}.yaml").read_text()
    assert yaml.safe_load(text)["job"] == "finetune"
    sources = re.compile(r"Table 6|section 4|appendix A|mae_st|VideoMAE|authors'|timm's")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"^\s+\w+: \S", line):
            continue
        comment = line.split("#", 1)[1] if "#" in line else ""
        j = i + 1
        while j < len(lines) and re.match(r"^\s{20,}#", lines[j]):  # continued below
            comment += lines[j].split("#", 1)[1]
            j += 1
        assert sources.search(comment), f"{name}.yaml: {line.strip()!r} names no source"


def test_presets_are_listed_and_only_for_finetune() -> None:
    listed = builtin_configs()
    for name in PRESETS:
        assert name in listed and listed[name].startswith("Fine-tuning")
    res = runner.invoke(app, ["train", "configs"])
    assert res.exit_code == 0 and all(name in res.output for name in PRESETS)
    with pytest.raises(ConfigError, match="is a finetune config: use it with `vicmae train"):
        load_config("k400_vitb")  # pretraining
    with pytest.raises(ConfigError, match="finetune config"):
        load_config("k400_vitb", cls=LinprobeConfig)
    res = runner.invoke(app, ["train", "finetune", "--config", "ssv2_vitl", "--print-config"])
    assert res.exit_code == 0 and "sampling: segment" in res.output
    res = runner.invoke(app, ["train", "pretrain", "--config", "k400_vitb", "--print-config"])
    assert res.exit_code != 0 and "vicmae train finetune --config k400_vitb" in res.output
