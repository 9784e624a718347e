"""Conversion under stress: stuck items, full or read-only disks, two jobs on one output,
kills, odd file names, settings that cannot work. Real files, real processes, real mounts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from media import tmpfs, wait_for, write_class_clips
from PIL import Image
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data.format.beton import BetonFile
from vicmae_data.synth.media import render_clip, write_video
from vicmae_data.write.convert import convert

runner = CliRunner()
EXE = str(Path(sys.executable).parent / "vicmae-data")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Two classes of small clips."""
    return write_class_clips(tmp_path_factory.mktemp("clips"), 6, 12, 48, 64)


@pytest.fixture(scope="module")
def slow_clips(tmp_path_factory) -> Path:
    """Clips that take ~0.1 s each to encode at method 6, so a run can be caught mid-way."""
    return write_class_clips(tmp_path_factory.mktemp("slow"), 16, 40, 96, 128)


SLOW = ["--short-side", "96", "--method", "6"]


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                out.add(pid)
    return out


def start_cli(root: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = [EXE, "convert", "folder", "--root", str(root), "--out", str(out), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def parts_of(out: Path) -> list[Path]:
    return sorted(Path(f"{out}.parts").glob("*/*.part"))


def one_line_error(result, code: int = 2) -> str:
    """The one error line (progress lines may come before it), no traceback."""
    assert result.exit_code == code, result.output
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.stderr
    assert result.stderr.strip().endswith(errors[0])
    return errors[0]


# --- per-item time limit ------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_an_item_stuck_on_a_fifo_is_stopped_skipped_and_named(clips, tmp_path):
    root = tmp_path / "r"
    (root / "c0").mkdir(parents=True)
    os.mkfifo(root / "c0" / "pipe")
    # An ffconcat script under a video name: FFmpeg opens the FIFO and waits for ever.
    (root / "c0" / "stuck.mp4").write_text("ffconcat version 1.0\nfile 'pipe'\n")
    write_video(root / "c0" / "good.mp4", render_clip(0, 8, 32, 48, seed=1))
    start = time.monotonic()
    report = convert("folder", root, tmp_path / "o.beton", workers=2, short_side=32, item_timeout=2)
    assert time.monotonic() - start < 60
    assert report.written == 1
    (skip,) = report.skipped
    assert skip["source"] == "c0/stuck.mp4" and "per-item time limit (2 s" in skip["reason"]


# --- disk full, read-only, a folder as --out -------------------------------------------------


def test_disk_full_while_converting_is_one_line_and_keeps_what_is_encoded(slow_clips, tmp_path):
    with tmpfs(tmp_path / "small", "size=160k") as small:
        out = small / "o.beton"
        argv = ["convert", "folder", "--root", str(slow_clips), "--out", str(out), "-w", "2"]
        start = time.monotonic()
        result = runner.invoke(app, [*argv, *SLOW])
        text = one_line_error(result, code=1)
        assert "disk full" in text and "rerun the same command" in text
        assert time.monotonic() - start < 120
        kept = parts_of(out)
        assert kept and not out.exists() and not Path(f"{out}.lock").exists()
        # Room again: the rerun resumes from what was kept and finishes.
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        result = runner.invoke(app, [*argv, *SLOW])
        assert result.exit_code == 0, result.output
        report = json.loads(Path(f"{out}.report.json").read_text())
        assert report["totals"]["resumed"] >= len(kept) and report["written"] == 16


def test_read_only_output_folder_is_refused_before_any_work(clips, tmp_path):
    with tmpfs(tmp_path / "ro", "size=1m", "ro") as ro:
        result = runner.invoke(
            app, ["convert", "folder", "--root", str(clips), "--out", str(ro / "o.beton")]
        )
        text = one_line_error(result, code=1)
        assert "read-only file system" in text and str(ro / "o.beton") in text


def test_out_naming_a_folder_is_refused_before_any_work(clips, tmp_path):
    result = runner.invoke(app, ["convert", "folder", "--root", str(clips), "--out", str(tmp_path)])
    assert "is a folder" in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--short-side", "0"], "short_side"),
        (["--short-side", "20000"], "16383"),
        (["--workers", "0"], "--workers"),
        (["--holdout", "1.5", "--holdout-out", "{tmp}/v.beton"], "--holdout"),
        (["--holdout", "0.1"], "--holdout-out"),
        (["--item-timeout", "0"], "--item-timeout"),
        (["--max-sample-mb", "4096"], "max_sample_bytes"),
        (["--limit", "0"], "--limit"),
        (["--holdout", "0.1", "--holdout-out", "{tmp}/o.beton"], "is --out itself"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_any_work(clips, tmp_path, args, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(
        app, ["convert", "folder", "--root", str(clips), "--out", str(tmp_path / "o.beton"), *argv]
    )
    assert needle in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_images_wider_than_webp_allows_are_skipped_with_the_reason(tmp_path):
    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 16400, 3), np.uint8)).save(root / "a" / "wide.png")
    Image.fromarray(np.zeros((8, 64, 3), np.uint8)).save(root / "a" / "ok.png")
    report = convert("folder", root, tmp_path / "o.beton", workers=1)
    (skip,) = report.skipped
    assert skip["source"] == "a/wide.png"
    assert "8 x 16400 (h x w)" in skip["reason"] and "16383" in skip["reason"]


# --- one job per output; no process left behind --------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_second_job_on_the_same_output_is_refused_and_sigterm_leaves_nothing(
    slow_clips, tmp_path
):
    out = tmp_path / "o.beton"
    first = start_cli(slow_clips, out, "--workers", "2", *SLOW)
    try:
        wait_for(lambda: len(parts_of(out)) >= 2)
        family = descendants(first.pid)  # fork server, workers, resource tracker
        assert len(family) >= 3
        start = time.monotonic()
        second = subprocess.run(
            [EXE, "convert", "folder", "--root", str(slow_clips), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2 and time.monotonic() - start < 30
        assert f"pid {first.pid} on host" in second.stderr and "convert" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 143
        assert "terminated" in first.stderr.read()
        wait_for(lambda: not alive(family), timeout=10)
    finally:
        first.kill()
        first.wait()
    assert not out.exists() and not Path(f"{out}.lock").exists() and parts_of(out)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.slow
def test_sigkill_leaves_no_process_behind_and_the_rerun_resumes(slow_clips, tmp_path):
    out = tmp_path / "o.beton"
    first = start_cli(slow_clips, out, "--workers", "2", *SLOW)
    try:
        wait_for(lambda: len(parts_of(out)) >= 2)
        family = descendants(first.pid)
        assert len(family) >= 3
        first.kill()
        first.wait(30)
        wait_for(lambda: not alive(family), timeout=10)
    finally:
        first.kill()
        first.wait()
    # The stale lock of the killed job does not stop the rerun.
    assert Path(f"{out}.lock").exists()
    rerun = subprocess.run(
        [EXE, "convert", "folder", "--root", str(slow_clips), "--out", str(out), *SLOW],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["totals"]["resumed"] >= 2 and report["written"] == 16


# --- names, progress ------------------------------------------------------------------------


def test_file_names_that_are_not_utf8_are_converted_and_shown(clips, tmp_path):
    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    odd = os.fsdecode(b"caf\xe9 \xff.mp4")  # Latin-1 bytes: not UTF-8
    (root / "a" / "good.mp4").write_bytes((clips / "c0" / "v00.mp4").read_bytes())
    (root / "a" / odd).write_bytes((clips / "c0" / "v02.mp4").read_bytes())
    (root / "a" / os.fsdecode(b"bad\xfe.mp4")).write_text("not a video")
    out = tmp_path / "o.beton"
    result = runner.invoke(app, ["convert", "folder", "--root", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "bad\\udcfe.mp4" in result.stderr  # the skipped one, named with an escape
    beton = BetonFile(out)
    assert {beton.meta(i)["source"] for i in range(len(beton))} == {"a/good.mp4", f"a/{odd}"}
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["skipped"][0]["source"] == "a/" + os.fsdecode(b"bad\xfe.mp4")
    sample = beton.index_of(f"a/{odd}")
    assert (root / beton.meta(sample)["source"]).is_file()  # the stored name opens the file
    # A class folder whose name is not UTF-8: a class like any other, shown escaped.
    (root / os.fsdecode(b"z\xe9")).mkdir()
    (root / os.fsdecode(b"z\xe9") / "v.mp4").write_bytes((clips / "c1" / "v01.mp4").read_bytes())
    result = runner.invoke(
        app, ["convert", "folder", "--root", str(root), "--out", str(out), "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    assert BetonFile(out).manifest.classes == ("a", os.fsdecode(b"z\xe9"))
    shown = runner.invoke(app, ["info", str(out)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "1: z\\udce9 (1)" in shown.stdout, shown.output
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0


def test_progress_is_plain_lines_in_a_log_including_the_write(clips, tmp_path):
    out = tmp_path / "o.beton"
    argv = ["convert", "folder", "--root", str(clips), "--out", str(out), "--log-every", "0"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    lines = [x for x in result.stderr.splitlines() if " convert: " in x or " write " in x]
    convert_lines = [x for x in lines if " convert: " in x]
    write_lines = [x for x in lines if " write " in x]
    assert convert_lines[-1].split(" convert: ")[1].startswith("6/6 items (100.0%)")
    assert all("ETA" in x and "elapsed" in x for x in lines)
    assert write_lines and "samples" in write_lines[-1] and str(out) in write_lines[-1]
    # A rerun of a complete conversion says so and encodes nothing.
    again = runner.invoke(app, argv)
    assert again.exit_code == 0 and "already complete" in again.stdout
    assert " convert: " not in again.stderr
