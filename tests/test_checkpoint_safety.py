"""Checkpoints never run code: a planted pickle is refused by every command that loads one."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from media import make_tiny_beton, tmpfs
from typer.testing import CliRunner

from vicmae.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from vicmae_cli.train import app

runner = CliRunner()


def _plant(path: Path, marker: Path) -> Path:
    """A torch.save file whose pickle calls os.system to create ``marker`` when loaded."""
    code = textwrap.dedent(
        f"""
        import os, torch
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        torch.save({{"model": Evil(), "step": 1}}, {str(path)!r})
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evil")
    marker = root / "pwned"
    path = _plant(root / "evil.pt", marker)
    # The file really is an exploit: full unpickling (what the old code did) runs it.
    load = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", load], check=True)
    assert marker.exists()
    marker.unlink()
    return path, marker


@pytest.fixture()
def evil(planted, tmp_path) -> tuple[Path, Path]:
    path, marker = planted
    copy = tmp_path / "evil.pt"
    copy.write_bytes(path.read_bytes())
    assert not marker.exists()
    return copy, marker


def _refused(res, marker: Path) -> None:
    assert res.exit_code != 0, res.output
    text = res.output.strip()
    assert "Traceback" not in text, text
    last = text.splitlines()[-1]
    assert last.startswith("error:") and "refused" in last and "posix.system" in last, text
    assert not marker.exists(), "the planted pickle ran"


def test_library_loader_refuses_a_pickle_that_runs_code(evil):
    path, marker = evil
    with pytest.raises(CheckpointError, match=r"refused: loading it would call posix\.system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_export_refuses_a_pickle_that_runs_code(evil, tmp_path):
    path, marker = evil
    out = tmp_path / "vit.pth"
    res = runner.invoke(app, ["export", "timm", "--checkpoint", str(path), "--out", str(out)])
    _refused(res, marker)
    assert not out.exists()


def test_linprobe_refuses_a_pickle_that_runs_code(evil, tmp_path):
    path, marker = evil
    beton = make_tiny_beton(tmp_path / "tiny.beton", n=4)
    res = runner.invoke(
        app,
        ["train", "linprobe", "--beton", str(beton), "--val-beton", str(beton),
         "--checkpoint", str(path), "--out", str(tmp_path / "probe")],
    )  # fmt: skip
    _refused(res, marker)


def test_resume_refuses_a_pickle_that_runs_code(evil, tmp_path):
    path, marker = evil
    beton = make_tiny_beton(tmp_path / "tiny.beton", n=4)
    run = tmp_path / "run"
    run.mkdir()
    os.replace(path, run / "last.pt")
    res = runner.invoke(
        app,
        ["train", "pretrain", "--beton", str(beton), "--out", str(run), "--resume",
         "model.arch=vit_pico_patch8", "data.resolution=32", "optim.batch_size=2",
         "data.num_workers=1"],
    )  # fmt: skip
    _refused(res, marker)


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_checkpoints_are_one_line_errors(tmp_path, damage):
    good = save_checkpoint(tmp_path / "good.pt", {"model": {"w": torch.zeros(1000)}})
    bad = tmp_path / "bad.pt"
    data = good.read_bytes()
    bad.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="empty file" if damage == "empty" else "truncated"):
        load_checkpoint(bad)
    res = runner.invoke(
        app, ["export", "timm", "--checkpoint", str(bad), "--out", str(tmp_path / "x.pth")]
    )
    assert res.exit_code != 0
    text = res.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert "bad.pt" in text


def test_rng_states_survive_the_safe_loader(tmp_path):
    """RNG states are stored as tensors and numbers, so weights_only loading accepts them."""
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # numpy now holds a cached gaussian: part of its state
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.standard_normal(3), random.random(), random.gauss(0, 1))
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_rng_state(torch.load(path, weights_only=True)["rng"])
    got = (torch.rand(3), np.random.standard_normal(3), random.random(), random.gauss(0, 1))
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2:] == got[2:]


@pytest.fixture()
def small_disk(tmp_path):
    """A 256 KiB tmpfs (a real full disk); skipped where this machine forbids mounting."""
    with tmpfs(tmp_path / "small", "size=256k") as mnt:
        yield mnt


def test_full_disk_while_saving_is_one_line_and_keeps_the_previous(small_disk):
    path = small_disk / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(1000)}, "step": 1})  # 4 KB: fits
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, {"model": {"w": torch.ones(1_000_000)}, "step": 2})  # 4 MB
    assert str(info.value) == f"{path}: cannot save checkpoint (disk full)"
    assert load_checkpoint(path)["step"] == 1  # the previous checkpoint is intact
    assert sorted(p.name for p in small_disk.iterdir()) == ["last.pt"]  # no .tmp left
