"""Where a benchmark writes its figures: an ignored folder, unless asked to update the
committed ones.

A run on a user's machine must not overwrite the figures the docs quote (measured on a
named machine, committed in ``benchmarks/results/``). By default the JSON and PNG go to
``benchmarks/out/`` (ignored by git); ``--update-results`` (``make bench-loader UPDATE=1``)
writes ``benchmarks/results/`` instead, for a run meant to replace the committed figures.

    parser = argparse.ArgumentParser()
    add_output_options(parser)
    args = parser.parse_args()
    out = output_dir(args)  # benchmarks/out, or results with --update-results, or --out
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMITTED = HERE / "results"  # what the docs quote
SCRATCH = HERE / "out"  # ignored by git (.gitignore)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--out DIR`` and ``--update-results``."""
    parser.add_argument(
        "--out", type=Path, default=None, help=f"folder for the figures (default: {SCRATCH})"
    )
    parser.add_argument(
        "--update-results",
        action="store_true",
        help=f"write the committed figures in {COMMITTED} instead (make ... UPDATE=1)",
    )


def output_dir(args: argparse.Namespace) -> Path:
    """The folder this run writes to (created): ``--out``, else the committed folder with
    ``--update-results``, else the ignored one."""
    if args.out is not None and args.update_results:
        raise SystemExit("error: --out and --update-results name two folders; give one")
    out = args.out or (COMMITTED if args.update_results else SCRATCH)
    out.mkdir(parents=True, exist_ok=True)
    return out
