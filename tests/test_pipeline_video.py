"""Issue 17's tiny pipeline, end to end through the command lines a user types: synth
Something-Something v2 and Places365 in their shipped layouts, convert both, pretrain (the
demo config, a few steps) on the video + image mix, fine-tune the video model on SSv2
clips for an epoch, and get a K x 3 multi-view top-1 (VideoMAE's 2 x 3 for SSv2)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vicmae_cli.data import app as data_app
from vicmae_cli.train import app as train_app

runner = CliRunner()


def _ok(app, args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, f"{' '.join(args)}:\n{res.output}"
    return res.output


@pytest.mark.slow  # ~1 minute on 2 idle cores: synth, three conversions, two trainings
def test_ssv2_and_places365_to_a_multi_view_top1(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for layout in ("ssv2", "places365"):
        _ok(data_app, ["synth", "--layout", layout, "--out", f"data/{layout}", "--videos", "8"])
    for dataset, split in (("ssv2", "train"), ("ssv2", "val"), ("places365", "train")):
        _ok(data_app, ["convert", dataset, "--split", split, "--out", f"{dataset}-{split}.beton",
                       "--short-side", "32", "--workers", "1"])  # fmt: skip
    small = ["data.resolution=16", "data.num_workers=1", "run.progress=false"]
    _ok(train_app, ["train", "pretrain", "--config", "demo_cpu", "--beton", "ssv2-train.beton",
                    "--beton", "places365-train.beton", "--out", "pre", "--batch-size", "8",
                    "--epochs", "1", "run.max_steps=2", *small])  # fmt: skip
    out = _ok(train_app, [
        "train", "finetune", "--config", "ssv2_vitl", "--beton", "ssv2-train.beton",
        "--val-beton", "ssv2-val.beton", "--checkpoint", "pre/last.pt", "--out", "ft",
        "--batch-size", "8", "--epochs", "1", "optim.warmup_epochs=0", "model.arch=null",
        "data.clip_frames=4", *small,
    ])  # fmt: skip
    assert "2 x 3 views: top-1" in out
    result = json.loads((tmp_path / "ft" / "result.json").read_text())
    assert result["test_views"] == [2, 3] and result["test_samples"] == 8
    assert 0.0 <= result["test_top1"] <= 100.0 and result["num_classes"] >= 2
    print(f"SSv2 (synth) 2 x 3 multi-view top-1: {result['test_top1']:.1f}%")
