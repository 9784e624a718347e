"""What `vicmae-data convert` prints in a job's log: sizes in a unit that shows them, and no
silent gap between the last item encoded and the first sample written."""

from __future__ import annotations

import io

from rich.console import Console

from vicmae_cli.display import size
from vicmae_cli.progress import ConvertProgressView
from vicmae_data.write.convert import ConvertProgress


def test_sizes_are_shown_in_a_unit_that_is_not_zero():
    assert size(0) == "0 B" and size(1023) == "1023 B"
    assert size(1_200_000) == "1.1 MiB" and size(3 * 2**30) == "3.0 GiB"
    assert size(2**40 * 700) == "700.0 TiB"


def test_small_data_projects_a_readable_size_and_announces_the_write():
    out = io.StringIO()
    view = ConvertProgressView(Console(file=out, width=200), every=30.0)
    for done in range(1, 25):  # 24 items of 50 kB: 1.2 MB in all
        view.update(ConvertProgress("convert", done, 24, 0, 40 * done, 50_000 * done, 0, done))
    view.update(ConvertProgress("write", 0, 24, 0, 960, 1_200_000, 0, 30.0, "k.beton"))
    lines = out.getvalue().splitlines()
    projected = next(ln for ln in lines if "projected size" in ln)
    assert "~1.1 MiB" in projected and "0.00 GiB" not in out.getvalue()
    # Right after the last item, before the writer's start-up: one line saying what follows.
    last = next(i for i, ln in enumerate(lines) if "convert: 24/24" in ln)
    assert "all 24 items encoded (1.1 MiB of frames); writing the .beton" in lines[last + 1]
    assert "write k.beton: 0/24" in lines[last + 2]
    assert sum("items encoded" in ln for ln in lines) == 1
