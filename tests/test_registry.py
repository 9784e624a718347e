"""The dataset registry: one entry per layout, read by list_items, synth and both --help."""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
from rich.text import Text
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_cli.data_convert import convert_help
from vicmae_data.format.beton import BetonFile
from vicmae_data.sources import registry
from vicmae_data.sources.folder import LAYOUT as FOLDER
from vicmae_data.sources.layouts import DATASETS, SPLITS, LayoutError, list_items
from vicmae_data.synth.dataset import LAYOUTS, synth_dataset

runner = CliRunner()
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "data.md"


def test_every_entry_is_complete():
    assert DATASETS == LAYOUTS == tuple(registry.REGISTRY)
    for name, entry in registry.REGISTRY.items():
        assert entry.name == name and callable(entry.read) and callable(entry.twin)
        assert set(SPLITS) <= set(entry.splits or SPLITS)  # every layout has train and val
        lines = entry.help_lines()
        assert lines[0].startswith(f"{name}: {entry.title}")
        assert all(f"  ROOT/{f}" in lines for f in entry.files)


def test_both_helps_come_from_the_registry():
    shown = runner.invoke(app, ["convert", "--help"], env={"COLUMNS": "200"}).output
    for entry in registry.REGISTRY.values():
        for line in entry.help_lines():
            assert line.strip() in shown, line  # "[<label>/]" not eaten as rich markup
    synth = runner.invoke(app, ["synth", "--help"], env={"COLUMNS": "300"}).output
    assert ", ".join(DATASETS) in synth


def test_a_new_layout_is_one_entry(monkeypatch, tmp_path):
    """An entry added to the registry alone is listed, synthesised and in the help."""
    plain = replace(
        FOLDER,
        name="plainfolders",
        title="Plain folders",
        splits=("train", "val"),
        files=("[split/]<class>/<file>",),  # "[split/]" would be a rich markup tag
    )
    monkeypatch.setitem(registry.REGISTRY, plain.name, plain)
    summary = synth_dataset("plainfolders", tmp_path, videos=2, splits=("train",))
    listing = list_items("plainfolders", tmp_path / "train", "training")
    assert (listing.dataset, listing.split) == ("plainfolders", "train")
    assert len(listing.items) == len(summary.written("train")) == 2
    shown = Text.from_markup(convert_help()).plain  # as typer renders it (rich markup)
    assert "plainfolders: Plain folders (mixed)" in shown
    assert "ROOT/[split/]<class>/<file>" in shown
    with pytest.raises(LayoutError, match="unknown split 'test' for plainfolders"):
        list_items("plainfolders", tmp_path / "train", "test")
    with pytest.raises(LayoutError, match="unknown variant 'large' for plainfolders"):
        list_items("plainfolders", tmp_path / "train", variant="large")


def test_readme_block_of_the_newest_converters_runs(tmp_path, monkeypatch):
    """docs/data.md's SSv2 and Places365 lines, run as written on their twins in data/."""
    block = re.search(r"```bash\n(vicmae-data convert ssv2 .*?)```", GUIDE.read_text(), re.S)
    lines = block.group(1).strip().splitlines()
    assert [shlex.split(line)[2] for line in lines] == ["ssv2", "places365"]
    synth_dataset("ssv2", tmp_path / "data" / "ssv2", videos=2)
    synth_dataset("places365", tmp_path / "data" / "places365", videos=2)
    monkeypatch.chdir(tmp_path)
    for line in lines:
        argv = shlex.split(line)
        result = runner.invoke(app, [*argv[1:], "--workers", "1"])
        assert result.exit_code == 0, result.output
        assert len(BetonFile(tmp_path / argv[argv.index("--out") + 1])) == 2
