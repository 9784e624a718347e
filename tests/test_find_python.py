"""`make` builds .venv with the newest supported Python it finds (scripts/find-python.sh).

Each case runs the script with a PATH holding only fake interpreters: shell scripts that
answer the version question as that Python would (the script asks each one its version,
so a name that lies, like a pyenv shim of a version not installed, is not trusted).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "find-python.sh"


def _fake_path(tmp_path: Path, pythons: dict[str, str | None]) -> Path:
    """A folder of fake interpreters: name -> the version it reports (None: fails to run)."""
    folder = tmp_path / "bin"
    folder.mkdir(parents=True)
    for name, version in pythons.items():
        body = f"echo {version}" if version else "echo 'pyenv: no such version' >&2; exit 127"
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return folder


def _find(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), *args], env={"PATH": str(folder)},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_a_machine_with_only_python312_uses_it(tmp_path):
    folder = _fake_path(tmp_path, {"python3.12": "3.12"})
    done = _find(folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(folder / "python3.12")


@pytest.mark.parametrize(
    ("pythons", "chosen"),
    [
        ({"python3.11": "3.11", "python3.12": "3.12", "python3.13": "3.13"}, "python3.13"),
        ({"python3.11": "3.11", "python3": "3.13"}, "python3.11"),  # a versioned name first
        ({"python3": "3.12", "python3.10": "3.10"}, "python3"),
        ({"python3.13": None, "python3.12": "3.12"}, "python3.12"),  # a shim that cannot run
        ({"python3.14": "3.14", "python3.11": "3.11"}, "python3.11"),  # 3.14: not supported
    ],
)
def test_the_newest_supported_one_is_chosen(tmp_path, pythons, chosen):
    folder = _fake_path(tmp_path, pythons)
    done = _find(folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(folder / chosen)


def test_no_supported_python_is_one_line_naming_what_to_install(tmp_path):
    folder = _fake_path(tmp_path, {"python3": "3.10"})
    done = _find(folder)
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.count("\n") == 1 and "python3 is Python 3.10" in done.stderr
    assert "make PYTHON=" in done.stderr
    done = _find(_fake_path(tmp_path / "empty", {}))
    assert done.returncode == 2 and "no python3.13, python3.12, python3.11" in done.stderr


def test_python_given_is_used_when_supported_and_refused_otherwise(tmp_path):
    folder = _fake_path(tmp_path, {"python3.12": "3.12", "old": "3.10"})
    done = _find(folder, str(folder / "python3.12"))
    assert done.returncode == 0 and done.stdout.strip() == str(folder / "python3.12")
    done = _find(folder, "old")
    assert done.returncode == 2 and "old is Python 3.10; vicmae supports" in done.stderr
    done = _find(folder, "missing")
    assert done.returncode == 2 and "missing not found" in done.stderr


def test_the_supported_versions_are_pyprojects():
    """The script's list and pyproject's requires-python say the same versions."""
    text = (REPO / "pyproject.toml").read_text()
    low, high = re.search(r'requires-python = ">=3\.(\d+),<3\.(\d+)"', text).groups()
    listed = re.search(r"SUPPORTED=\(([^)]*)\)", SCRIPT.read_text()).group(1).split()
    assert sorted(listed) == [f"3.{m}" for m in range(int(low), int(high))]
