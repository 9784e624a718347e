"""The last tracebacks of the hostile-input test are one line naming the cause (issue 19, 6).

``pretrain --out`` on a read-only file system; ``merge`` of a file whose size field is
2^64-x; ``export`` of a checkpoint whose model values are not tensors; ``info`` and
``pretrain -b`` on a FIFO or a folder. Real files, real mounts, the real CLIs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from media import TINY_MODEL, make_tiny_beton, tmpfs
from typer.testing import CliRunner

from vicmae_cli.data import app as data_app
from vicmae_cli.train import app as train_app
from vicmae_data.format.beton import BetonFile
from vicmae_data.format.tables import FIELD_DESC, HEADER, METADATA

runner = CliRunner()
TINY = [
    *TINY_MODEL, "data.resolution=32", "optim.batch_size=8", "optim.epochs=1",
    "data.num_workers=1", "run.progress=false",
]  # fmt: skip


def _one_line(res, *needles: str, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    text = res.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error: ") and all(n in text for n in needles), text
    return text


def _read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


@pytest.fixture(scope="module")
def beton(tmp_path_factory) -> Path:
    return make_tiny_beton(tmp_path_factory.mktemp("data") / "tiny.beton", n=8)


def test_pretrain_out_on_a_read_only_file_system(beton, tmp_path):
    with tmpfs(tmp_path / "ro", "size=4m") as ro:
        # A run folder from an earlier run: its config and metrics (resume rewrites them).
        (ro / "old").mkdir()
        config = runner.invoke(
            train_app, ["train", "pretrain", "-b", str(beton), *TINY, "--print-config"]
        )
        (ro / "old" / "config.yaml").write_text(config.output)
        (ro / "old" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
        _read_only(ro)
        res = runner.invoke(
            train_app, ["train", "pretrain", "-b", str(beton), "--out", str(ro / "run"), *TINY]
        )
        _one_line(res, f"{ro / 'run'}: cannot write the run folder (read-only file system)")
        res = runner.invoke(
            train_app,
            ["train", "pretrain", "-b", str(beton), "--out", str(ro / "old"), "--resume", *TINY],
        )
        assert res.exit_code == 2, res.output
        last = res.output.strip().splitlines()[-1]  # after the warning that no checkpoint is there
        assert "Traceback" not in res.output and last.startswith("error: "), res.output
        assert f"{ro / 'old'}: cannot write the run folder (read-only file system)" in last


def _with_size(good: Path, out: Path, index: int, size: int) -> Path:
    """``good`` with sample ``index``'s frame-blob size field set to ``size``."""
    data = bytearray(good.read_bytes())
    at = HEADER.itemsize + 3 * FIELD_DESC.itemsize + index * METADATA.itemsize
    at += METADATA.fields["f0"][1] + 8  # frames: ptr (u8), then size (u8)
    data[at : at + 8] = size.to_bytes(8, "little")
    out.write_bytes(bytes(data))
    return out


def test_merge_of_a_size_field_near_2_64_names_the_sample(beton, tmp_path):
    bad = _with_size(beton, tmp_path / "bad.beton", 3, 2**64 - 5)
    out = tmp_path / "m.beton"
    res = runner.invoke(data_app, ["merge", str(bad), str(beton), "--out", str(out)])
    assert res.exit_code == 2, res.output
    errors = res.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    assert "bad.beton: sample 3 is damaged" in errors[0] and "--skip-damaged" in errors[0]
    assert not out.exists()
    res = runner.invoke(
        data_app, ["merge", str(bad), str(beton), "--out", str(out), "--skip-damaged"]
    )
    assert res.exit_code == 0, res.output
    assert len(BetonFile(out)) == 2 * 8 - 1
    report = json.loads(Path(f"{out}.report.json").read_text())
    (entry,) = report["damaged"]
    assert entry["index"] == 3 and entry["path"] == str(bad)


def test_export_of_a_checkpoint_whose_model_values_are_not_tensors(tmp_path):
    ckpt = tmp_path / "odd.pt"
    torch.save({"model": {"encoder.cls_token": "a string", "encoder.pos_embed": 3}}, ckpt)
    res = runner.invoke(
        train_app, ["export", "timm", "--checkpoint", str(ckpt), "--out", str(tmp_path / "v")]
    )
    _one_line(res, "odd.pt: cannot export", "encoder.cls_token is a str, not a tensor")
    torch.save({"model": {0: torch.zeros(1)}}, ckpt)
    res = runner.invoke(
        train_app, ["export", "timm", "--checkpoint", str(ckpt), "--out", str(tmp_path / "v")]
    )
    _one_line(res, "odd.pt: cannot export", "not a model state dict")


@pytest.mark.timeout(120)  # a FIFO opened for reading would wait for a writer for ever
@pytest.mark.parametrize(
    ("kind", "said"), [("folder", "is a folder"), ("fifo", "is a FIFO (named pipe)")]
)
def test_info_and_pretrain_say_what_the_path_is(tmp_path, kind, said):
    path = tmp_path / "x.beton"
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    for app, args in (
        (data_app, ["info", str(path)]),
        (data_app, ["verify", str(path)]),
        (train_app, ["train", "pretrain", "-b", str(path), "--out", str(tmp_path / "run")]),
        (train_app, ["export", "timm", "--checkpoint", str(path), "--out", str(tmp_path / "v")]),
    ):
        _one_line(runner.invoke(app, args), f"{path}: {said}, not a file")
    assert not (tmp_path / "run").exists()
