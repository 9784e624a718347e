"""Helpers every command shares: --version, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console

import vicmae
from vicmae_cli.display import shown

if TYPE_CHECKING:
    from vicmae_data.format.beton import BetonFile

err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vicmae {vicmae.__version__}")
        raise typer.Exit()


version_option = typer.Option(
    False,
    "--version",
    "-V",
    callback=_print_version,
    is_eager=True,
    help="Show the version and exit.",
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit non-zero (no traceback)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def open_beton_or_fail(path: Path) -> BetonFile:
    """``BetonFile(path)``, or the reason it is not a readable .beton in one line (exit 2)."""
    from vicmae_data.format.beton import BetonError, BetonFile

    try:
        return BetonFile(path)
    except BetonError as exc:
        fail(shown(str(exc)))
