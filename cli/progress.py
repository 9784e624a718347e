"""Progress of a conversion: a live bar on a terminal, plain dated lines in a job's log."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vicmae_cli.display import clock, shown, size


class ConvertProgressView:
    """Fed by ``convert(progress=...)``. On a terminal, a rich bar for each phase; else
    (stderr redirected to a file, as under Slurm) one plain line every ``every`` seconds
    and at the start and end of each phase, with rates and the time left."""

    def __init__(self, console: Console, every: float) -> None:
        self.console = console
        self.every = every
        self.live = console.is_terminal
        self.bar: Progress | None = None
        self.task = None
        self.phase = ""
        self.base: tuple[float, int, int] | None = None  # (elapsed, done, frames) at start
        self.last_line = 0.0
        self.projected = False
        self.encoded = False  # the line between encoding and writing was printed

    # After this many items (or seconds) of this run, the projected size of the whole file
    # is printed once, so that a user can stop before filling a disk.
    PROJECT_AFTER_ITEMS, PROJECT_AFTER_S = 20, 60.0

    def update(self, p) -> None:
        if (p.phase, p.out) != self.phase:
            self._new_phase(p)
        self._project(p)
        self._show(p)
        if p.phase == "convert" and p.done >= p.total and not self.encoded:
            # Before the first sample is written the writer loads ffcv (seconds; a minute
            # on a busy machine): say so, rather than leave a silent gap after 100%.
            self.encoded = True
            (self.bar.console if self.bar is not None else self.console).print(
                f"{time.strftime('%H:%M:%S')} all {p.total:,} items encoded "
                f"({size(p.nbytes)} of frames); writing the .beton (loading the writer)...",
                highlight=False,
                soft_wrap=True,
            )

    def _show(self, p) -> None:
        assert self.base is not None
        # Rates count only this run's work, not the items resumed from the cache.
        seconds = max(p.elapsed - self.base[0], 1e-9)
        items_s = (p.done - self.base[1]) / seconds
        frames_s = (p.frames - self.base[2]) / seconds
        unit = "samples" if p.phase == "write" else "items"
        rates = f"{items_s:.1f} {unit}/s" + (
            f", {frames_s:.0f} frames/s" if p.phase != "write" else ""
        )
        if self.live and self.bar is not None:
            self.bar.update(
                self.task, total=p.total, completed=p.done, rates=rates, skipped=p.skipped
            )
            return
        now = time.monotonic()
        final = p.done >= p.total
        if final or now - self.last_line >= self.every:
            self.last_line = now
            left = (p.total - p.done) / items_s if items_s > 0 else None
            eta = clock(left) if left is not None else "?"
            what = f"write {shown(p.out)}" if p.phase == "write" else "convert"
            pct = 100.0 * p.done / max(p.total, 1)
            skipped = f", {p.skipped} skipped" if p.phase != "write" else ""
            self.console.print(
                f"{time.strftime('%H:%M:%S')} {what}: {p.done:,}/{p.total:,} {unit} "
                f"({pct:.1f}%), {rates}{skipped}, elapsed {clock(p.elapsed)}, ETA {eta}",
                highlight=False,
                soft_wrap=True,
            )

    def _project(self, p) -> None:
        assert self.base is not None
        projected = p.projected_bytes
        ran = p.done - self.base[1]
        ready = ran >= self.PROJECT_AFTER_ITEMS or p.elapsed - self.base[0] >= self.PROJECT_AFTER_S
        if self.projected or projected is None or not (ready or p.done >= p.total):
            return
        self.projected = True
        line = (
            f"projected size of the .beton for all {p.total:,} items: ~{size(projected)} "
            f"(frames; from the first {p.done - p.skipped:,} converted)"
        )
        (self.bar.console if self.bar is not None else self.console).print(
            line, highlight=False, soft_wrap=True
        )

    def _new_phase(self, p) -> None:
        self.stop()
        self.phase = (p.phase, p.out)
        self.base = (p.elapsed, p.done, p.frames)
        self.last_line = 0.0  # the first line of a phase is printed at once
        if not self.live:
            return
        label = f"write {p.out}" if p.phase == "write" else "convert"
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rates]}"),
        ]
        if p.phase != "write":
            columns.append(TextColumn("[yellow]{task.fields[skipped]} skipped"))
        columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=self.console, transient=True)
        self.task = self.bar.add_task(escape(label), total=p.total, rates="", skipped=0)
        self.bar.start()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
