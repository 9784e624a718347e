"""The two console scripts as a user meets them: installed, listed, versioned, documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

import vicmae
from vicmae_cli.data import app as data_app
from vicmae_cli.train import app as train_app

runner = CliRunner()
BIN = Path(sys.executable).parent


def _all_commands(app: typer.Typer):
    """(path, click command) for every leaf command of a Typer app."""
    root = get_command(app)
    stack = [((), root)]
    while stack:
        path, cmd = stack.pop()
        sub = getattr(cmd, "commands", None)
        if sub:
            stack.extend(((*path, name), c) for name, c in sub.items())
        else:
            yield path, cmd


def test_cli_folder_is_not_installed_as_generic_cli_package(tmp_path):
    # From outside the checkout (where the `cli/` folder is not on sys.path by accident),
    # the apps import as `vicmae_cli` and no top-level `cli` package exists.
    probe = (
        "import importlib.util as u; "
        "print(u.find_spec('vicmae_cli') is not None, u.find_spec('cli') is None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


@pytest.mark.parametrize("script", ["vicmae-data", "vicmae"])
def test_console_script_help_and_version(script):
    exe = shutil.which(script, path=str(BIN))
    assert exe, f"{script} is not installed next to {sys.executable}"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Commands" in out.stdout
    ver = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert ver.returncode == 0
    assert vicmae.__version__ in ver.stdout


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (data_app, {"synth", "convert", "merge", "info", "verify", "preview"}),
        (train_app, {"pretrain", "linprobe", "finetune", "timm", "plot"}),
    ],
)
def test_every_command_is_listed_and_has_an_example(app, expected):
    commands = dict(_all_commands(app))
    names = {path[-1] for path in commands}
    assert expected <= names, f"missing commands: {expected - names}"
    for path, cmd in commands.items():
        helptext = cmd.help or ""
        assert helptext.strip(), f"{' '.join(path)} has no help text"
        assert "example" in helptext.lower(), f"{' '.join(path)} help has no example"
