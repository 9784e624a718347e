"""`vicmae-data`: make, convert, merge and inspect .beton datasets.

Each command lives in the module of its area and is a thin wrapper over a library
function in `vicmae_data`; this file only assembles the app.
"""

from __future__ import annotations

import typer

from vicmae_cli import data_convert, data_inspect, data_synth
from vicmae_cli.common import version_option

app = typer.Typer(
    name="vicmae-data",
    help="Convert video and image datasets into .beton files of WebP frames, and inspect them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(version: bool = version_option) -> None:
    """Convert video and image datasets into .beton files of WebP frame lists, and inspect them."""


data_synth.register(app)
data_convert.register(app)
data_inspect.register(app)
