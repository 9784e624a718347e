"""`convert --holdout F --holdout-out val.beton`: a stratified, deterministic held-out split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data import check_same_classes
from vicmae_data.format.beton import BetonFile
from vicmae_data.sources.layouts import list_items
from vicmae_data.synth.media import render_clip, write_video
from vicmae_data.write.convert import convert
from vicmae_data.write.holdout import holdout_count, holdout_sources

PER_CLASS = {"a": 7, "b": 4, "c": 1}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hold")
    k = 0
    for name, n in PER_CLASS.items():
        (root / name).mkdir()
        for i in range(n):
            write_video(root / name / f"{name}{i}.mp4", render_clip(k % 3, 4, 24, 32, seed=k))
            k += 1
    return root


def sources(path: Path) -> list[str]:
    beton = BetonFile(path)
    return [beton.meta(i)["source"] for i in range(len(beton))]


def test_holdout_counts_units():
    assert [holdout_count(0.25, n) for n in (0, 1, 2, 4, 6, 7)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        holdout_sources([], 1.0)


def test_holdout_is_stratified_deterministic_and_partitions_the_items(root, tmp_path):
    train, val = tmp_path / "train.beton", tmp_path / "val.beton"
    result = CliRunner().invoke(
        app,
        ["convert", "folder", "--root", str(root), "--out", str(train),
         "--holdout", "0.25", "--holdout-out", str(val), "--short-side", "16"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "held out: 3 items in" in result.stderr
    a, b = sources(train), sources(val)
    listing = list_items("folder", root)
    assert sorted(a + b) == sorted(i.source for i in listing.items) and not set(a) & set(b)
    per_class = Counter(s.split("/")[0] for s in b)
    assert per_class == {"a": 2, "b": 1}  # round half up of 0.25 * (7, 4, 1)
    assert set(b) == holdout_sources(listing.items, 0.25)
    check_same_classes(train, val)  # one class list, although val has no "c"
    assert BetonFile(val).manifest.classes == ("a", "b", "c")
    reports = [json.loads(Path(f"{p}.report.json").read_text()) for p in (train, val)]
    assert reports[0]["holdout"] == reports[1]["holdout"]
    assert reports[0]["holdout"]["holdout_written"] == 3 and reports[0]["written"] == 9
    assert reports[1]["settings"]["role"] == "holdout"
    # A rerun finds both complete and encodes nothing.
    again = convert("folder", root, train, short_side=16, holdout=0.25, holdout_out=val)
    assert again.up_to_date


def test_shards_make_the_same_choice(root, tmp_path):
    whole = tmp_path / "val.beton"
    convert("folder", root, tmp_path / "t.beton", short_side=16, holdout=0.25, holdout_out=whole)
    held = []
    for k in range(2):
        out, val = tmp_path / f"t{k}.beton", tmp_path / f"v{k}.beton"
        convert("folder", root, out, short_side=16, holdout=0.25, holdout_out=val, shard=(k, 2))
        held += sources(val) if val.exists() else []
    assert sorted(held) == sorted(sources(whole))


def test_a_holdout_that_holds_out_nothing_is_refused_before_any_work(root, tmp_path):
    from vicmae_data.write.convert import ConvertError

    with pytest.raises(ConvertError, match="holds out no item"):
        convert("folder", root, tmp_path / "t.beton", holdout=0.05, holdout_out=tmp_path / "v")
    assert list(tmp_path.iterdir()) == []
