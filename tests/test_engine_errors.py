"""Training-side settings and files that cannot work: one line naming the cause, before any work.

(Resuming with another architecture or batch size: tests/test_trainer.py.)
"""

from __future__ import annotations

from importlib.util import find_spec

import pytest
import torch
from media import TINY_MODEL, make_tiny_beton, tmpfs
from typer.testing import CliRunner

from vicmae_cli.train import app

runner = CliRunner()
TINY = [*TINY_MODEL, "optim.batch_size=8", "optim.epochs=1", "optim.warmup_epochs=0",
        "data.num_workers=1", "run.progress=false"]  # fmt: skip


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    return make_tiny_beton(tmp_path_factory.mktemp("data") / "tiny.beton", n=16)


def _one_line(res, needle: str, *, after_start: bool = False) -> None:
    """The error is one line (the last, after the run's own log when it had started)."""
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert after_start or len(lines) == 1, text
    assert lines[-1].startswith("error: ") and needle in lines[-1], text


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.resolution=63", "data.resolution=63 is not a positive multiple of the patch size 8"),
        ("data.resolution=0", "data.resolution=0 is not a positive multiple"),
        ("model.img_size=63", "img_size 63 is not a multiple of patch 8"),
        ("optim.batch_size=0", "optim.batch_size=0 must be positive"),
        ("optim.accum=3", "optim.accum=3 does not divide the per-device batch 8"),
        ("run.device=tpu", "run.device='tpu'"),
        ("optim.layer_decay=0.65", "optim.layer_decay applies to fine-tuning only"),
        pytest.param(
            "run.wandb=true",
            "run.wandb=true but wandb is not installed",
            marks=pytest.mark.skipif(bool(find_spec("wandb")), reason="wandb is installed"),
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_before_any_work(beton, tmp_path, override, needle):
    out = tmp_path / "run"
    res = runner.invoke(
        app, ["train", "pretrain", "--beton", str(beton), "--out", str(out), *TINY, override]
    )
    _one_line(res, needle)
    assert not out.exists()  # nothing was set up


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused(beton, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(
        app, ["train", "pretrain", "--beton", str(beton), "--out", str(out), *TINY,
              "run.device=cuda", "data.resolution=32"],
    )  # fmt: skip
    _one_line(res, "run.device=cuda but no CUDA GPU is usable here")
    assert not out.exists()


def test_zero_byte_checkpoints_are_one_line_errors(beton, tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    res = runner.invoke(
        app, ["train", "linprobe", "-b", str(beton), "--checkpoint", str(empty),
              "--out", str(tmp_path / "probe")],
    )  # fmt: skip
    _one_line(res, "empty.pt: empty file (0 bytes), not a checkpoint")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    res = runner.invoke(
        app, ["train", "pretrain", "--beton", str(beton), "--out", str(run), "--resume", *TINY,
              "data.resolution=32"],
    )  # fmt: skip
    _one_line(res, "last.pt: empty file (0 bytes), not a checkpoint")


@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MiB tmpfs (a real full disk); skipped where this machine forbids mounting."""
    with tmpfs(tmp_path / "small", "size=1m") as mnt:
        yield mnt


def test_disk_full_while_saving_a_checkpoint(beton, small_disk):
    # vit_small's checkpoint (~100 MB with AdamW state) cannot fit 1 MiB.
    res = runner.invoke(
        app, ["train", "pretrain", "--beton", str(beton), "--out", str(small_disk / "run"),
              *TINY, "model.arch=vit_small_patch16", "data.resolution=32",
              "optim.batch_size=4", "run.max_steps=1"],
    )  # fmt: skip
    _one_line(res, "last.pt: cannot save checkpoint (disk full)", after_start=True)
    assert not list((small_disk / "run").glob("*.pt")) and not list(small_disk.rglob("*.tmp"))
