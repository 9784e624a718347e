"""A benchmark run on a user's machine writes to an ignored folder; the committed figures
the docs quote change only when asked (``--update-results``, ``make ... UPDATE=1``)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("outputs", ROOT / "benchmarks" / "outputs.py")
outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(outputs)


def _dir(*argv: str) -> Path:
    parser = argparse.ArgumentParser()
    outputs.add_output_options(parser)
    return outputs.output_dir(parser.parse_args(list(argv)))


def test_figures_go_to_an_ignored_folder_unless_asked(tmp_path):
    assert _dir() == outputs.SCRATCH
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(outputs.SCRATCH / "loader.json")], cwd=ROOT
    )
    assert ignored.returncode == 0, "benchmarks/out/ is not ignored by git"
    assert _dir("--update-results") == outputs.COMMITTED == ROOT / "benchmarks" / "results"
    assert _dir("--out", str(tmp_path / "x")) == tmp_path / "x" and (tmp_path / "x").is_dir()
    with pytest.raises(SystemExit):
        _dir("--out", str(tmp_path), "--update-results")


@pytest.mark.parametrize("name", ["bench_loader.py", "bench_convert.py", "bench_startup.py"])
def test_each_cpu_benchmark_takes_its_folder_from_the_options(name):
    text = (ROOT / "benchmarks" / name).read_text()
    assert "add_output_options(parser)" in text and "output_dir(args)" in text
    assert '"results"' not in text  # no path of its own into the committed folder


def test_make_update_1_passes_the_flag():
    # Under `make test` this is a make inside make: MAKELEVEL would add "Entering directory"
    # lines, and the parent's MAKEFLAGS its options, so the child gets a clean environment.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}

    def dry_run(*argv: str) -> str:
        done = subprocess.run(["make", "--no-print-directory", "-n", *argv], cwd=ROOT,
                              env=env, capture_output=True, text=True)  # fmt: skip
        return done.stdout

    for target in ("bench-loader", "bench-convert"):
        plain, update = dry_run(target), dry_run(target, "UPDATE=1")
        assert "--update-results" not in plain
        assert "--update-results" in update.splitlines()[-1]
