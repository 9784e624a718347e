"""Issue 17's tiny pipeline, end to end, as docs/evaluation.md's synthetic block writes it
(scaled to 2 cores as the paragraph before it says): synth Something-Something v2 and
Places365 in their shipped layouts, convert them, pretrain (the demo config, a few steps)
on the video + image mix, fine-tune the video model on SSv2 clips for an epoch with the
``ssv2_vitl`` preset, get VideoMAE's 2 x 3 multi-view top-1, and score the checkpoint
again with ``vicmae eval``."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex

import pytest
from test_readme_examples import block_with, scaled
from typer.testing import CliRunner

from vicmae_cli.data import app as data_app
from vicmae_cli.train import app as train_app

MARKER = "vicmae-data synth --layout ssv2 --out data/ssv2"
APPS = {"vicmae-data": data_app, "vicmae": train_app}


@pytest.mark.slow  # ~1 minute on 2 cores: synth, three conversions, two trainings, eval
def test_the_guides_video_block_gives_a_multi_view_top1(tmp_path, monkeypatch) -> None:
    block = block_with(MARKER)
    assert block.page == "docs/evaluation.md"
    small = dataclasses.replace(block, text=scaled(block.text, block))
    assert "--videos 8" in small.text and "data.clip_frames=4" in small.text
    monkeypatch.chdir(tmp_path)
    output = ""
    for line in small.commands():  # in this process: one import of torch, not eight
        argv = shlex.split(line)
        res = CliRunner().invoke(APPS[argv[0]], argv[1:])
        assert res.exit_code == 0, f"{line}\n{res.output}"
        output += res.output
    found = re.search(r"2 x 3 views: top-1 ([\d.]+)%", output)
    assert found, output
    result = json.loads((tmp_path / "runs/mix/ssv2/result.json").read_text())
    assert result["test_views"] == [2, 3] and result["test_samples"] == 8
    assert result["test_top1"] == pytest.approx(float(found.group(1)), abs=0.01)
    evaluated = json.loads((tmp_path / "runs/mix/ssv2/eval_ssv2-val.json").read_text())
    assert evaluated["test_top1"] == pytest.approx(result["test_top1"])
    assert evaluated["views"] == [2, 3]
    print(f"SSv2 (synthetic) 2 x 3 multi-view top-1: {result['test_top1']:.1f}%")
