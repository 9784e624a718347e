"""The Typer apps `vicmae-data` and `vicmae` (installed as `vicmae_cli`)."""
