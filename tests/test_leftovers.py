"""A killed write leaks nothing: the next job on the same output removes what it left.

Issue 19, item 5: ``kill -9`` while the .beton is written left a hidden, nearly full-size
``.OUT.PID.HEX.tmp`` that no rerun removed. Real conversions and merges in real processes,
killed with SIGKILL at a point the test controls (a part of the resume cache served through
a FIFO that stops sending: the writer waits there, its temporary file half written).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from media import make_tiny_beton, wait_for, write_class_clips
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data.atomic import temporaries, temporary_name
from vicmae_data.format.beton import BetonFile
from vicmae_data.write.lock import output_lock
from vicmae_data.write.parts import PartsCache

runner = CliRunner()
EXE = str(Path(sys.executable).parent / "vicmae-data")
SLOW = ["--short-side", "96", "--method", "6", "--workers", "1"]
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists() or not hasattr(os, "mkfifo"), reason="needs /proc, FIFOs"
)


def _children(pid: int) -> set[int]:
    """The living processes below ``pid`` (from /proc): a conversion's worker processes."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and wait until its workers are gone too (they write parts)."""
    family = _children(proc.pid)
    proc.kill()
    proc.wait(30)
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in family), timeout=30)


def _convert(root: Path, out: Path, log: Path) -> subprocess.Popen:
    args = [EXE, "convert", "folder", "--root", str(root), "--out", str(out), *SLOW]
    with open(log, "ab") as fh:
        return subprocess.Popen(args, stdout=fh, stderr=fh)


class StallingPart:
    """A part of the resume cache replaced by a FIFO that sends nothing: the writer that
    reads it waits there for ever (its .beton half written). ``stalling`` is set once a
    reader has opened it."""

    def __init__(self, part: Path) -> None:
        self.part, self.content = part, part.read_bytes()
        part.unlink()
        os.mkfifo(part)
        self.stop, self.stalling = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:  # succeeds once a reader has the FIFO open (ENXIO before)
                fd = os.open(self.part, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.005)
                continue
            self.stalling.set()
            self.stop.wait()  # hold it open, send nothing
            os.close(fd)

    def restore(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.part.unlink()
        self.part.write_bytes(self.content)


@pytest.fixture(scope="module")
def slow_clips(tmp_path_factory) -> Path:
    """Clips that take ~0.1 s each to encode at method 6, so a run can be caught mid-way."""
    return write_class_clips(tmp_path_factory.mktemp("slow"), 12, 30, 96, 128)


@pytest.mark.slow
def test_a_conversion_killed_while_writing_leaks_nothing_after_the_rerun(slow_clips, tmp_path):
    out, log = tmp_path / "o.beton", tmp_path / "log.txt"
    # 1. Killed while converting: the resume cache keeps what was encoded.
    first = _convert(slow_clips, out, log)
    try:
        wait_for(lambda: len(list(Path(f"{out}.parts").glob("*/*.part"))) >= 2)
    finally:
        _kill_all(first)
    done = sorted(Path(f"{out}.parts").glob("*/*.part"))
    # 2. The rerun reads the cached parts' headers, converts the rest, then writes the
    # file: one cached part, swapped for a FIFO once the rerun converts (its headers are
    # read by then), stops the writer there; it is killed while it waits.
    second = _convert(slow_clips, out, log)
    stall = None
    try:
        wait_for(lambda: len(list(Path(f"{out}.parts").glob("*/*.part"))) > len(done))
        # The last item converted (workers=1: in listing order), so items before it are
        # written when the writer stops there.
        stall = StallingPart(max(done, key=lambda p: p.stat().st_mtime_ns))
        wait_for(stall.stalling.is_set)
        assert temporaries(tmp_path, out.name)  # made before any sample is read
        time.sleep(0.2)  # the samples before the stalled one are written meanwhile
    finally:
        _kill_all(second)
        if stall is not None:
            stall.restore()
    (leftover,) = temporaries(tmp_path, out.name)
    assert leftover.name.startswith(f".{out.name}.{second.pid}.") and leftover.stat().st_size > 0
    assert not out.exists()
    # 3. The next run removes it and writes the file from the cache.
    third = _convert(slow_clips, out, log)
    assert third.wait(300) == 0, log.read_text()[-3000:]
    assert not leftover.exists() and temporaries(tmp_path) == []
    assert len(BetonFile(out)) == 12 and "removed" in log.read_text()  # said, in a warning


def test_the_resume_cache_removes_a_killed_workers_part_leftover(tmp_path):
    """A part's temporary file (its worker killed while writing it) goes when the cache
    opens (under the output's lock); every other file stays."""
    parts = tmp_path / "o.beton.parts"
    (parts / "ab").mkdir(parents=True)
    leftover = temporary_name(parts / "ab" / "abcdef.part")
    leftover.write_bytes(b"x" * 1000)
    whole = parts / "ab" / "abcdef.part"
    whole.write_bytes(b"a part")
    PartsCache(parts, {"version": 1}).open(restart=True)  # restart: the key is not whole's
    assert not leftover.exists() and not parts.joinpath("ab").exists()
    (parts / "cd").mkdir()
    leftover = temporary_name(parts / "cd" / "ef.part")
    leftover.write_bytes(b"x")
    kept = parts / "cd" / "ef.part"
    kept.write_bytes(b"a part")
    PartsCache(parts, {"version": 1}).open()
    assert not leftover.exists() and kept.exists() and (parts / "key.json").exists()


def test_a_merge_locks_its_output_and_removes_a_killed_writers_leftover(tmp_path):
    a = make_tiny_beton(tmp_path / "a.beton", n=6)
    out = tmp_path / "m.beton"
    # A real writer process, killed while it writes `out` (it stops before sample 2).
    child = textwrap.dedent(
        """
        import sys, time
        from vicmae_data.format.beton import BetonFile
        from vicmae_data.write.beton_writer import write_beton
        src = BetonFile(sys.argv[1])
        class Stalls:
            def __len__(self):
                return len(src)
            def __getitem__(self, i):
                if i >= 2:
                    time.sleep(600)
                return src.sample(i)
        sizes = [int(n) for n in src.frames_meta["size"]]
        write_beton(sys.argv[2], Stalls(), frame_sizes=sizes, num_workers=1)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child, str(a), str(out)])
    try:
        wait_for(lambda: bool(temporaries(tmp_path, out.name)))
    finally:
        proc.kill()
        proc.wait(30)
    (leftover,) = temporaries(tmp_path, out.name)
    with output_lock(out):
        assert not leftover.exists()  # taking the lock removed the killed writer's file
        live = temporary_name(out)  # the lock holder's own file, being written
        live.write_bytes(b"x" * 100)
        res = runner.invoke(app, ["merge", str(a), "--out", str(out)])
        assert res.exit_code == 2 and "being written by another job" in res.stderr, res.output
        assert len(res.stderr.strip().splitlines()) == 1
        assert live.exists() and not out.exists()  # a live job's file is never touched
    # The holder went without cleaning up (as a killed job does): the next merge does it.
    res = runner.invoke(app, ["merge", str(a), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert not live.exists() and temporaries(tmp_path) == [] and len(BetonFile(out)) == 6


def test_a_merge_that_cannot_write_its_report_leaves_no_output(tmp_path):
    """The report is written before the merged file takes its name: OUT never exists
    without its report (a merge killed in between, or a report that cannot be written)."""
    a = make_tiny_beton(tmp_path / "a.beton", n=4)
    Path(f"{a}.report.json").write_text(json.dumps({"written": 4, "skipped": []}))
    out = tmp_path / "m.beton"
    Path(f"{out}.report.json").mkdir()  # where the report goes: a folder is in the way
    res = runner.invoke(app, ["merge", str(a), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "m.beton.report.json: cannot write the merge's report (is a folder)" in res.stderr
    assert not out.exists() and temporaries(tmp_path) == []
    Path(f"{out}.report.json").rmdir()
    res = runner.invoke(app, ["merge", str(a), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["written"] == 4 and len(BetonFile(out)) == 4
