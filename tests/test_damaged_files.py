"""Damaged .beton files: every reader fails cleanly or loads, none crashes (issue 13, 5-6).

A deterministic fuzz: bytes flipped at seeded random places in each structure of a small
real file (header, field descriptors, metadata table, allocation table, frame data, JSON
metas), and the file cut short. Every reader runs on every damaged file, in a child process
so that a segfault shows as a failed test instead of killing the suite: ``info``,
``verify``, ``read_sample`` and ``make_loader`` in each memory mode. Each must finish with a
result or a clean Python error (:class:`BetonError` and friends), never a crash or a hang.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from media import make_tiny_beton
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data.format.beton import BetonError, BetonFile
from vicmae_data.format.tables import FIELD_DESC, HEADER, METADATA
from vicmae_data.inspect.info import info
from vicmae_data.inspect.verify import verify

runner = CliRunner()
SEEDS = (0, 1)


def _regions(path: Path) -> dict[str, tuple[int, int]]:
    beton = BetonFile(path)
    descs_end = HEADER.itemsize + 3 * FIELD_DESC.itemsize
    metas = beton.tables.metadata["f2"]
    frames = beton.frames_meta
    return {
        "header": (0, HEADER.itemsize),
        "fields": (HEADER.itemsize, descs_end),
        "metadata": (descs_end, descs_end + len(beton) * METADATA.itemsize),
        "frames": (int(frames["ptr"].min()), int((frames["ptr"] + frames["size"]).max())),
        "metas": (int(metas["ptr"].min()), int((metas["ptr"] + metas["size"]).max())),
        "alloc": (beton.tables.data_end, beton.file_bytes),
    }


def _damaged_files(good: Path, out: Path) -> list[Path]:
    data = good.read_bytes()
    files = []
    for name, (lo, hi) in _regions(good).items():
        for seed in SEEDS:
            rng = np.random.default_rng([seed, len(name)])
            bad = bytearray(data)
            for at in rng.integers(lo, hi, size=4):
                bad[int(at)] ^= int(rng.integers(1, 256))
            path = out / f"{name}-{seed}.beton"
            path.write_bytes(bytes(bad))
            files.append(path)
    for cut in (1, 500):
        path = out / f"cut-{cut}.beton"
        path.write_bytes(data[:-cut])
        files.append(path)
    return files


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> tuple[Path, list[Path]]:
    d = tmp_path_factory.mktemp("damaged")
    good = make_tiny_beton(d / "good.beton", n=12, frames=3, size=32)
    return good, _damaged_files(good, d)


CHILD = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    from vicmae_data import make_loader
    from vicmae_data.inspect.info import info
    from vicmae_data.inspect.read import read_sample
    from vicmae_data.inspect.verify import verify
    CLEAN = (ValueError, IndexError, KeyError, OSError)  # BetonError is a ValueError
    out = {}
    for path in sys.argv[1:]:
        got = {}
        for name, run in (
            ("info", lambda: info(path)),
            ("verify", lambda: verify(path)),
            ("read", lambda: read_sample(path, 0)),
        ):
            try:
                run()
                got[name] = "ok"
            except CLEAN as exc:
                got[name] = type(exc).__name__
        for mode in ("mmap-bounded", "os_cache", "process_cache"):
            try:
                loader = make_loader(path, 4, num_workers=2, resolution=16, memory=mode)
                got[mode] = sum(len(b.labels) for b in loader)
            except CLEAN as exc:
                got[mode] = type(exc).__name__
        out[path] = got
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_no_reader_crashes_on_a_damaged_file(damaged):
    good, files = damaged
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(good), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"a reader crashed (exit {result.returncode}):\n" + (result.stderr[-3000:])
    )
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcomes[str(good)] == {
        "info": "ok", "verify": "ok", "read": "ok",
        "mmap-bounded": 12, "os_cache": 12, "process_cache": 12,
    }  # fmt: skip
    # Damage in the tables is found before anything is decoded: a file cut short is
    # refused by every reader.
    for cut in ("cut-1", "cut-500"):
        got = outcomes[str(good.with_name(f"{cut}.beton"))]
        assert set(got.values()) == {"BetonError"}, (cut, got)


def test_truncation_and_table_damage_fail_info_and_verify(damaged, tmp_path):
    good, _ = damaged
    cut = good.with_name("cut-500.beton")
    with pytest.raises(BetonError, match="cut short"):
        info(cut)
    result = runner.invoke(app, ["info", str(cut)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cut short" in result.stderr and result.stderr.count("\n") == 1
    result = runner.invoke(app, ["verify", str(cut)])
    assert result.exit_code == 2 and "cut short" in result.stderr
    # One sample's pointer moved off its allocation: info counts it, verify names it, the
    # loader leaves it out.
    bad = tmp_path / "pointer.beton"
    data = bytearray(good.read_bytes())
    row = HEADER.itemsize + 3 * FIELD_DESC.itemsize + 5 * METADATA.itemsize  # sample 5's ptr
    data[row : row + 8] = (2**40).to_bytes(8, "little")
    bad.write_bytes(bytes(data))
    assert info(bad).damaged == 1
    report = verify(bad)
    assert [(b.index, "allocation table" in b.reason) for b in report.bad] == [(5, True)]
    from vicmae_data import make_loader

    with pytest.warns(UserWarning, match="1 sample left out"):
        loader = make_loader(str(bad), 4, num_workers=1, resolution=16)
    seen = {int(i) for b in loader for i in b.indices}
    assert 5 not in seen and len(seen) == 8  # 11 good samples, 2 full batches of 4


def test_verify_checks_labels_against_the_class_names(tmp_path):
    good = make_tiny_beton(tmp_path / "good.beton", n=8)
    beton = BetonFile(good)
    data = bytearray(good.read_bytes())
    label_at = HEADER.itemsize + 3 * FIELD_DESC.itemsize + 3 * METADATA.itemsize
    label_at += METADATA.fields["f1"][1]
    data[label_at : label_at + 8] = (1_000_000).to_bytes(8, "little")
    bad = tmp_path / "label.beton"
    bad.write_bytes(bytes(data))
    assert int(BetonFile(bad).labels[3]) == 1_000_000 and beton.checksum_ok(3)
    report = verify(bad)
    assert [b.index for b in report.bad] == [3]
    assert "label 1000000" in report.bad[0].reason
