"""Conversion end to end: every synth layout, workers, shards, resume, the CLI."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from media import write_class_clips
from PIL import Image
from typer.testing import CliRunner

from vicmae_cli.data import app
from vicmae_data.format.beton import BetonFile
from vicmae_data.sources.layouts import list_items
from vicmae_data.synth.dataset import synth_dataset
from vicmae_data.write.convert import ConvertError, convert, in_shard, parse_shard
from vicmae_data.write.parts import SettingsChangedError
from vicmae_data.write.report import OutputExistsError
from vicmae_data.write.transcode import rgb_frame, target_size

SHORT = 32
runner = CliRunner()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def decode_webp(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def reference(path: Path) -> list[np.ndarray]:
    """The source as PyAV (videos) or Pillow (images) decodes it, resized the same way."""
    try:
        with av.open(str(path)) as c:
            if c.streams.video and c.streams.video[0].codec_context.name not in ("png", "mjpeg"):
                out = []
                for frame in c.decode(video=0):
                    out.append(rgb_frame(frame, *target_size(frame.height, frame.width, SHORT)))
                return out
    except av.FFmpegError:
        pass
    image = Image.open(path).convert("RGB")
    h, w = target_size(image.height, image.width, SHORT)
    return [np.asarray(image.resize((w, h), Image.Resampling.BILINEAR))]


def samples(path: Path) -> list:
    beton = BetonFile(path)
    return [beton.sample(i) for i in range(len(beton))]


# (layout, synth keyword arguments, root below the synth folder)
LAYOUTS = [
    ("kinetics400", {"missing": 1}, ""),
    ("kinetics600", {"missing": 1}, ""),  # clips flat in train/
    ("kinetics700", {}, ""),
    ("mit", {"missing": 1}, ""),
    ("imagenet", {}, ""),
    ("folder", {}, "train"),
]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("synth")
    made = {}
    for layout, kwargs, sub in LAYOUTS:
        summary = synth_dataset(
            layout, base / layout, videos=5, seed=3, splits=("train",), **kwargs
        )
        made[layout] = (summary, base / layout / sub if sub else base / layout)
    return made


@pytest.mark.parametrize("layout", [name for name, _, _ in LAYOUTS])
def test_each_layout_converts_with_labels_and_fidelity(datasets, tmp_path, layout):
    summary, root = datasets[layout]
    out = tmp_path / f"{layout}.beton"
    report = convert(layout, root, out, workers=1, short_side=SHORT)
    assert out.is_file() and not (tmp_path / f"{layout}.beton.parts").exists()
    written = summary.written("train")
    prefix = "train/" if layout == "folder" else ""
    want = {item.path.removeprefix(prefix): item for item in written}
    got = samples(out)
    assert report.written == len(got) == len(want) and report.skipped == []
    assert len(report.missing) == sum(not i.on_disk for i in summary.items)
    beton = BetonFile(out)
    assert set(beton.class_names().items()) <= set(enumerate(summary.classes))
    for sample in got:
        meta = sample.meta
        item = want[meta["source"]]
        assert sample.label == item.label and meta["class_name"] == item.class_name
        assert meta["dataset"] == layout and meta["partial"] is False
        assert meta["num_classes"] == len(list_items(layout, root).classes)
        ref = reference(root / meta["source"])
        assert meta["num_frames"] == len(sample.frames.frames) == len(ref)
        assert (meta["height"], meta["width"]) == ref[0].shape[:2]
        assert meta["fps"] == (0.0 if item.kind == "image" else pytest.approx(item.fps, rel=1e-3))
        for data, frame in zip(sample.frames.frames, ref, strict=True):
            assert psnr(decode_webp(data), frame) > 30
    saved = json.loads((tmp_path / f"{layout}.beton.report.json").read_text())
    assert saved["written"] == len(got) and saved["totals"]["frames"] == sum(
        s.meta["num_frames"] for s in got
    )
    assert {"skipped", "partial", "missing", "settings", "totals"} <= set(saved)


def test_workers_give_the_same_file_as_one_process(datasets, tmp_path):
    _, root = datasets["folder"]
    one = convert("folder", root, tmp_path / "one.beton", workers=1, short_side=SHORT)
    two = convert("folder", root, tmp_path / "two.beton", workers=2, short_side=SHORT)
    assert one.written == two.written
    a, b = samples(tmp_path / "one.beton"), samples(tmp_path / "two.beton")
    assert [(s.label, s.meta, list(s.frames.frames)) for s in a] == [
        (s.label, s.meta, list(s.frames.frames)) for s in b
    ]


def test_shards_partition_the_items(datasets, tmp_path):
    _, root = datasets["kinetics400"]
    whole = {s.meta["source"] for s in samples(_convert(root, tmp_path / "all.beton"))}
    parts = []
    for k in range(3):
        try:
            out = _convert(root, tmp_path / f"s{k}.beton", shard=(k, 3))
            parts.append({s.meta["source"] for s in samples(out)})
        except ConvertError:  # a shard of a tiny dataset may be empty
            parts.append(set())
        assert all(in_shard(src, (k, 3)) for src in parts[-1])
    assert set().union(*parts) == whole and sum(map(len, parts)) == len(whole)
    limited = samples(_convert(root, tmp_path / "lim.beton", limit=2))
    assert [s.meta["source"] for s in limited] == sorted(whole)[:2]


def _convert(root: Path, out: Path, **kwargs) -> Path:
    convert("kinetics400", root, out, workers=1, short_side=SHORT, **kwargs)
    return out


def test_parse_shard():
    assert parse_shard("2/8") == (2, 8)
    for bad in ("8/8", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


class StopError(Exception):
    pass


def test_interrupted_run_resumes_and_settings_change_restarts(datasets, tmp_path):
    _, root = datasets["mit"]
    out = tmp_path / "mit.beton"
    parts = tmp_path / "mit.beton.parts"
    reference_run = convert("mit", root, tmp_path / "ref.beton", workers=1, short_side=SHORT)

    def stop_after_two(p):
        if p.done - p.resumed >= 2:
            raise StopError

    with pytest.raises(StopError):
        convert("mit", root, out, workers=1, short_side=SHORT, progress=stop_after_two)
    assert not out.exists() and parts.is_dir()
    seen = []
    report = convert("mit", root, out, workers=1, short_side=SHORT, progress=seen.append)
    assert report.totals["resumed"] == 2 and seen[0].resumed == 2
    done = [p for p in seen if p.phase == "convert"]
    assert done[-1].done == done[-1].total == reference_run.written
    assert _same(samples(out), samples(tmp_path / "ref.beton"))

    # A complete output is left alone: nothing is encoded, the report on disk comes back.
    before = (out.stat().st_mtime_ns, out.read_bytes())
    seen.clear()
    again = convert("mit", root, out, workers=2, short_side=SHORT, progress=seen.append)
    assert again.up_to_date and again.written == report.written and seen == []
    assert (out.stat().st_mtime_ns, out.read_bytes()) == before
    # ... and with other settings it is replaced only when asked.
    with pytest.raises(OutputExistsError, match=r"quality: 80 -> 60.*--overwrite"):
        convert("mit", root, out, workers=1, short_side=SHORT, quality=60)
    assert (out.stat().st_mtime_ns, out.read_bytes()) == before and not parts.exists()

    # Interrupted while replacing it; a rerun with other settings lists them and deletes
    # nothing; --restart starts over.
    with pytest.raises(StopError):
        convert(
            "mit", root, out, workers=1, short_side=SHORT, overwrite=True, progress=stop_after_two
        )
    kept = sorted(parts.rglob("*"))
    with pytest.raises(SettingsChangedError) as info:
        convert("mit", root, out, workers=1, short_side=SHORT, quality=60, method=0)
    message = str(info.value)
    assert "quality: 80 -> 60" in message and "method: 2 -> 0" in message
    assert "--restart" in message and "short_side" not in message
    assert sorted(parts.rglob("*")) == kept
    assert (out.stat().st_mtime_ns, out.read_bytes()) == before
    report = convert("mit", root, out, workers=1, short_side=SHORT, quality=60, restart=True)
    assert report.totals["resumed"] == 0 and report.settings["settings"]["quality"] == 60


def _same(a: list, b: list) -> bool:
    return [(s.label, s.meta, list(s.frames.frames)) for s in a] == [
        (s.label, s.meta, list(s.frames.frames)) for s in b
    ]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.fixture(scope="module")
def slow_clips(tmp_path_factory) -> Path:
    """Clips that take ~0.1 s each to encode at method 6, so a run can be cut mid-way."""
    return write_class_clips(tmp_path_factory.mktemp("slow_clips"), 10, 40, 96, 128)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find workers")
def test_a_dying_worker_does_not_stop_the_conversion(slow_clips, tmp_path, caplog):
    from multiprocessing import forkserver

    killed: list[int] = []

    def kill_a_worker(p):
        server = forkserver._forkserver._forkserver_pid
        if not killed and p.done >= 1 and server:
            for pid in _children(server)[:1]:
                os.kill(pid, signal.SIGKILL)  # as a decoder crash would end it
                killed.append(pid)

    settings = {"workers": 2, "short_side": 96, "method": 6}
    report = convert("folder", slow_clips, tmp_path / "a.beton", progress=kill_a_worker, **settings)
    assert killed and "worker process died" in caplog.text
    assert report.written == 10 and report.skipped == []
    convert("folder", slow_clips, tmp_path / "b.beton", workers=1, short_side=96, method=6)
    assert _same(samples(tmp_path / "a.beton"), samples(tmp_path / "b.beton"))


@pytest.mark.slow
def test_killed_cli_conversion_resumes_to_the_same_file(slow_clips, tmp_path):
    root = slow_clips
    args = ["folder", "--root", str(root), "--workers", "1", "--short-side", "96", "--method", "6"]
    exe = str(Path(sys.executable).parent / "vicmae-data")
    out = tmp_path / "k.beton"
    parts = tmp_path / "k.beton.parts"
    proc = subprocess.Popen(
        [exe, "convert", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*/*.part"))) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(60) == -signal.SIGKILL, "the conversion ended before it could be killed"
    assert not out.exists()
    done_before = len(list(parts.glob("*/*.part")))
    assert 2 <= done_before < 10
    rerun = subprocess.run(
        [exe, "convert", *args, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["totals"]["resumed"] >= done_before and report["written"] == 10
    convert("folder", root, tmp_path / "whole.beton", workers=1, short_side=96, method=6)
    assert _same(samples(out), samples(tmp_path / "whole.beton"))
    assert not parts.exists()


def test_cli_converts_and_prints_a_summary(datasets, tmp_path):
    _, root = datasets["imagenet"]
    out = tmp_path / "in.beton"
    result = runner.invoke(
        app,
        [
            "convert",
            "imagenet",
            "--root",
            str(root),
            "--out",
            str(out),
            "--workers",
            "1",
            "--short-side",
            "32",
            "--method",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "bytes/frame" in result.output and len(BetonFile(out)) == 5
    assert json.loads(Path(f"{out}.report.json").read_text())["settings"]["settings"]["method"] == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["convert", "kinetics400", "--root", "{tmp}/nowhere"], "does not exist"),
        (["convert", "youtube8m", "--root", "{tmp}"], "unknown dataset"),
        (["convert", "folder", "--root", "{tmp}", "--shard", "3/3"], "--shard"),
        (["convert", "folder", "--root", "{tmp}", "--fps", "fast"], "--fps"),
        (["convert", "kinetics400", "--root", "{tmp}"], "annotation"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args] + ["--out", str(tmp_path / "x.beton")]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert needle in text and len(text.splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "x.beton").exists()


def test_cli_nothing_converted_is_an_error(tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "a.mp4").write_text("not a video")
    result = runner.invoke(
        app,
        [
            "convert",
            "folder",
            "--root",
            str(tmp_path),
            "--out",
            str(tmp_path / "x.beton"),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 1 and "nothing converted" in result.stderr
    assert not (tmp_path / "x.beton").exists()
    report = json.loads((tmp_path / "x.beton.report.json").read_text())
    assert report["written"] == 0 and report["skipped"][0]["reason"].startswith("undecodable")


def test_default_root_is_data_slash_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["convert", "imagenet", "--out", "x.beton"])
    assert result.exit_code == 2 and os.path.join("data", "imagenet") in result.stderr


def test_labels_follow_annotations_edited_between_a_run_and_its_resumption(datasets, tmp_path):
    import shutil

    root = shutil.copytree(datasets["kinetics400"][1], tmp_path / "k400")
    out = tmp_path / "k.beton"

    def stop_after_two(p):
        if p.done - p.resumed >= 2:
            raise StopError

    with pytest.raises(StopError):
        convert("kinetics400", root, out, workers=1, short_side=SHORT, progress=stop_after_two)
    for csv_path in (root / "annotations").glob("*.csv"):  # rename a class everywhere
        csv_path.write_text(csv_path.read_text().replace("abseiling", "zz abseiling"))
    report = convert("kinetics400", root, out, workers=1, short_side=SHORT)
    assert report.totals["resumed"] == 2
    beton = BetonFile(out)
    classes = beton.manifest.classes
    assert "zz abseiling" in classes and "abseiling" not in classes
    by_class: dict[int, set[str]] = {}
    for i in range(len(beton)):
        name = beton.meta(i)["class_name"]
        assert classes[int(beton.labels[i])] == name
        by_class.setdefault(int(beton.labels[i]), set()).add(name)
    assert all(len(names) == 1 for names in by_class.values())
