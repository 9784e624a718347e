"""Helpers every command shares: --version, one-line errors."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

import vicmae

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
