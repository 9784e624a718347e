"""ffcv couplings: reviewed for one ffcv version, and every module that imports ffcv listed."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from vicmae_data import ffcv_private
from vicmae_data.ffcv_private import FFCV_VERSION
from vicmae_data.format.beton import BetonFile

ROOT = Path(ffcv_private.__file__).resolve().parents[1]
SCANNED = ("vicmae_data", "vicmae", "cli", "benchmarks", "scripts", "tests")
RECHECK = (
    "re-check every coupling listed in vicmae_data/ffcv_private.py's docstring (ffcv's private "
    "attributes there; the on-disk layout in write/beton_writer.py, format/tables.py and "
    "format/pages.py; the decoder's Operation attributes and calling convention; "
    "ctypes_resize/ctypes_memcopy and OpenCV's cvResize from the library ffcv links; "
    "OSCacheManager.state_type in load/memory.py), then set FFCV_VERSION there"
)


def test_the_installed_ffcv_is_the_reviewed_one():
    installed = importlib.metadata.version("ffcv")
    assert installed == FFCV_VERSION, (
        f"ffcv {installed} is installed but vicmae was reviewed against ffcv {FFCV_VERSION}: "
        + RECHECK
    )


def test_the_pins_are_the_reviewed_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if re.match(r"ffcv\b", d)]
    assert pins == [f"ffcv=={FFCV_VERSION}"], f"pyproject.toml pins {pins}: " + RECHECK
    bundle = re.search(r"^FFCV_VERSION=(\S+)$", (ROOT / "scripts/bundle.sh").read_text(), re.M)
    assert bundle and bundle.group(1) == FFCV_VERSION, "scripts/bundle.sh builds another ffcv"


def _imports_ffcv(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ffcv" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ffcv":
            return True
    return False


def test_every_module_that_imports_ffcv_is_listed():
    """A new module that imports ffcv is named in the quarantine's list (what to re-check)."""
    found = sorted(
        str(p.relative_to(ROOT))
        for folder in SCANNED
        for p in (ROOT / folder).rglob("*.py")
        if _imports_ffcv(p)
    )
    assert "vicmae_data/load/memory.py" in found  # the scan sees what it should
    unlisted = [f for f in found if f not in ffcv_private.__doc__ and not f.endswith("_private.py")]
    assert not unlisted, f"import ffcv but are not listed in ffcv_private's docstring: {unlisted}"


def test_vicmae_data_convert_writes_its_file_without_importing_ffcv(tmp_path):
    """`import ffcv` loads torch, numba and OpenCV (seconds; over a minute on a busy node):
    convert writes the .beton with NumPy alone, so nothing waits for them between the last
    encoded item and the file. ffcv comes with the loader, not before."""
    from media import write_mixed_folder

    root, out = write_mixed_folder(tmp_path / "f", 32, 48), tmp_path / "f.beton"
    args = ["convert", "folder", "--root", str(root), "--out", str(out)]
    args += ["--workers", "1", "--short-side", "24"]
    code = (
        "import sys\n"
        "from vicmae_cli.data import app\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        "heavy = {'ffcv', 'torch', 'numba', 'cv2'}\n"
        "print(status, sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert run.stdout.strip().splitlines()[-1] == "0 []", run.stdout + run.stderr
    assert BetonFile(out).labels.tolist() == [0, 0, 0]  # the file is there, whole
