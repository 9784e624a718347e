"""Damaged checkpoints are refused on load; non-finite weights are not exported silently.

Issue 19, item 2: torch never checks the CRC32s inside its zip, so a checkpoint with
flipped bits exported with exit 0 (weights off by up to 7.5e36) and ``linprobe
--checkpoint`` trained on it; an all-NaN model exported without a word.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from media import TINY_MODEL, make_tiny_beton
from typer.testing import CliRunner

from vicmae.config import load_config, to_dict
from vicmae.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vicmae.export import NonFiniteWeightsError, check_finite, encoder_state_dict, export_timm
from vicmae.model.vicmae import ViCMAE
from vicmae_cli.train import app

runner = CliRunner()
TINY = [*TINY_MODEL, "data.resolution=32"]
SEEDS = range(8)


def _state(nan: bool = False) -> dict:
    torch.manual_seed(0)
    cfg = load_config(None, TINY)
    model = ViCMAE(cfg.model).state_dict()
    if nan:
        model = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                 for k, v in model.items()}  # fmt: skip
    return {"kind": "pretrain", "model": model, "config": to_dict(cfg), "step": 0}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.pt", _state())


def _flipped(good: Path, out: Path, seed: int, bits: int = 20) -> Path:
    """``good`` with ``bits`` single bits flipped at seeded random places."""
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(seed)
    for at, bit in zip(rng.integers(0, len(data), bits), rng.integers(0, 8, bits), strict=True):
        data[int(at)] ^= 1 << int(bit)
    out.write_bytes(bytes(data))
    return out


def _one_line(res, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert all(n in text for n in needles), text
    return text


@pytest.mark.parametrize("seed", SEEDS)
def test_flipped_bits_are_refused_naming_the_file(good, tmp_path, seed):
    bad = _flipped(good, tmp_path / f"flipped{seed}.pt", seed)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: ") and "\n" not in message
    assert "damaged" in message or "truncated" in message
    # Loaded unchecked (what torch does), the file is not the checkpoint that was saved:
    # what the check refuses is real damage.
    try:
        unchecked = torch.load(bad, weights_only=True)["model"]
    except Exception:  # torch refuses some damage itself
        return
    saved = torch.load(good, weights_only=True)["model"]
    assert any(not torch.equal(saved[k], unchecked[k]) for k in saved)


def test_commands_refuse_a_damaged_checkpoint_in_one_line(good, tmp_path):
    bad = _flipped(good, tmp_path / "flipped.pt", 0)
    res = runner.invoke(
        app, ["export", "timm", "--checkpoint", str(bad), "--out", str(tmp_path / "v.pth")]
    )
    _one_line(res, "flipped.pt", "damaged checkpoint")
    assert not (tmp_path / "v.pth").exists()
    beton = make_tiny_beton(tmp_path / "tiny.beton", n=4)
    res = runner.invoke(
        app,
        ["train", "linprobe", "--beton", str(beton), "--val-beton", str(beton),
         "--checkpoint", str(bad), "--out", str(tmp_path / "probe")],
    )  # fmt: skip
    _one_line(res, "flipped.pt", "damaged checkpoint")
    assert not (tmp_path / "probe").exists()


def test_the_checkpoints_the_trainer_writes_pass_the_check(good):
    state = load_checkpoint(good)
    assert all(torch.equal(state["model"][k], v) for k, v in _state()["model"].items())


def test_export_refuses_non_finite_weights_unless_allowed(tmp_path):
    nan = save_checkpoint(tmp_path / "nan.pt", _state(nan=True))
    out = tmp_path / "vit.pth"
    res = runner.invoke(app, ["export", "timm", "--checkpoint", str(nan), "--out", str(out)])
    _one_line(res, "nan.pt", "encoder tensors hold NaN or infinite values", "--allow-non-finite")
    assert not out.exists()
    res = runner.invoke(
        app,
        ["export", "timm", "--checkpoint", str(nan), "--out", str(out), "--allow-non-finite"],
    )
    assert res.exit_code == 0, res.output
    warned = [x for x in res.stderr.splitlines() if x.startswith("warning: ")]
    assert len(warned) == 1 and "hold NaN or infinite values" in warned[0], res.stderr
    assert torch.isnan(torch.load(out, weights_only=True)["cls_token"]).all()


def test_the_library_refuses_non_finite_weights_unless_told(tmp_path):
    """export_timm and check_finite refuse by default, as the CLI does without its flag."""
    nan = save_checkpoint(tmp_path / "nan.pt", _state(nan=True))
    out = tmp_path / "vit.pth"
    with pytest.raises(NonFiniteWeightsError, match=r"\(first: cls_token, 64 of 64 values\)"):
        export_timm(nan, out)
    assert not out.exists()
    encoder = encoder_state_dict(nan)
    with pytest.raises(NonFiniteWeightsError, match="encoder tensors hold NaN"):
        check_finite(encoder)
    check_finite(encoder, allow=True)  # a warning instead
    export_timm(nan, out, allow_non_finite=True)
    assert torch.isnan(torch.load(out, weights_only=True)["cls_token"]).all()


def _flip(path: Path, out: Path, at: int, mask: int) -> Path:
    data = bytearray(path.read_bytes())
    data[at] ^= mask
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(
    "where",
    [
        # zipfile.is_zipfile raises (not returns False) when the zip64 end locator names
        # another disk than 0: "zipfiles that span multiple disks are not supported".
        "zip64 locator's disk number",
        # Stored (0) read as deflated (8): zlib, not zipfile, raises on the record's bytes.
        "first record's compression method",
    ],
)
def test_a_flip_in_the_zips_own_fields_is_refused_in_one_line(good, tmp_path, where):
    data = good.read_bytes()
    if where.startswith("zip64"):
        at, mask = data.rfind(b"PK\x06\x07") + 4, 0x01
    else:
        at, mask = data.find(b"PK\x01\x02") + 10, 0x08
    bad = _flip(good, tmp_path / "bad.pt", at, mask)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: damaged checkpoint (its zip does not hold together: ")
    assert "\n" not in message


def test_an_old_format_checkpoint_cut_or_flipped_anywhere_is_refused_in_one_line(tmp_path):
    """torch < 1.6's format (no zip, no checksums): its unpickler fails in many ways
    (IndexError, struct.error, AssertionError, ...) wherever the damage lands."""
    old = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.arange(6.0)}, "step": 3}, old,
               _use_new_zipfile_serialization=False)  # fmt: skip
    assert load_checkpoint(old)["step"] == 3
    data, bad = old.read_bytes(), tmp_path / "bad.pt"
    for n in range(1, len(data)):  # every cut
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(bad)
        assert str(caught.value).startswith(f"{bad}: ") and "\n" not in str(caught.value)
    for i in range(len(data)):  # a flipped bit in every byte
        try:
            load_checkpoint(_flip(old, bad, i, 1 << (i % 8)))
        except CheckpointError as exc:  # a bit flipped in a number loads: no checksum
            assert str(exc).startswith(f"{bad}: ") and "\n" not in str(exc)
