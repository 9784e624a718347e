"""Commands of `vicmae-data` (placeholder: filled in by its area)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
