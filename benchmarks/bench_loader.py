"""Loader benchmark: vicmae's loader against what a user would pick instead.

Same videos, same sampling (two distant frames), same output (two 224x224 uint8 views per
video, random resized crop + flip), same number of CPU workers:

1. vicmae: ``make_loader`` over a .beton converted from the videos, in its default memory
   mode (``mmap-bounded``) and, for comparison, ``os_cache`` and ``process_cache``;
2. PyAV: a ``torch.utils.data.Dataset`` that opens the mp4, seeks and decodes the two
   frames, crops and flips (torchvision v2), under a ``DataLoader``;
3. decord 0.6.0 in the same Dataset (and torchcodec when it imports beside our torch);
4. bound: libwebp decoding the same two full frames per sample in a compiled prange loop;
   and the loader's own compiled work alone (draw, decode each view's crop, resize, flip:
   ``kernels.decode_batch`` over the whole epoch in one prange loop, no pipeline around
   it), the most any loader doing this work can reach;
5. mixing: an image file (one frame of each clip) alone, and mixed 1:1 with the video
   file in every batch (``make_loader([videos, images])``), against the video file alone
   and against the sum of its two parts;
6. clips (video fine-tuning's input): 16-frame clips at stride 4 (``sampling="clip"``, one
   random resized crop and flip per clip) against PyAV and decord loading the same clips
   (seek, decode the window, keep the 16 frames, one crop and flip, as ST-MAE's and
   VideoMAE's loaders do) at equal workers, and against its own bound (libwebp decoding
   the 16 full frames per clip in a compiled prange loop);
7. integrity: the default loader with ``check_crc=True`` (every sample's whole blob read
   and checked), and the start-up row check (``vicmae_data.load.rows``) per sample.

Contenders are timed round-robin, one epoch each per round, and the best round of each
is kept. ``--scaling`` times only 1. (default mode), 2. and 4., for a worker-scaling run;
``--clips-only`` only 6. and the row check (into loader.json's ``clips`` entry).

Prints a table per worker count and the machine's load average before the run, writes
``loader.json`` and ``loader.png`` to ``benchmarks/out/`` (``--update-results``:
``benchmarks/results/``, what the docs quote).

    .venv/bin/python benchmarks/bench_loader.py                     # generated clips
    .venv/bin/python benchmarks/bench_loader.py --videos DIR        # your own mp4 files
    .venv/bin/python benchmarks/bench_loader.py --workers 1,4,8,16 --scaling  # a GPU node
    .venv/bin/python benchmarks/bench_loader.py --clips-only --workers 16     # clips/s/core
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np
import torch
from loader_clips import CLIP_FRAMES, CLIP_STRIDE, ClipsDataset, decode_clips
from numba import njit, prange, set_num_threads
from outputs import add_output_options, output_dir
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from vicmae_data.format.beton import BetonFile, Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.load.decoder import WebPFramesDecoder
from vicmae_data.load.kernels import decode_batch, kernel_table
from vicmae_data.load.loader import make_loader
from vicmae_data.load.native import libwebp
from vicmae_data.load.native.cvresize import HEADER_WORDS
from vicmae_data.load.rows import check_rows
from vicmae_data.load.samplers import distant, rng_init
from vicmae_data.write.beton_writer import write_beton


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- data -----------------------------------------------------------------------------


def _write_clip(job: tuple[Path, int, int, int, bool]) -> Path:
    """One generated h264 clip of 340x256 (a worker process's share of make_videos)."""
    path, i, T, fps, footage = job
    if footage:
        from vicmae_data.synth.footage import render_footage

        frames = render_footage(T, 256, 340, seed=i, fps=fps)
    else:
        try:
            from vicmae_data.synth.media import render_clip

            frames = render_clip(i % 8, T, 256, 340, seed=i)
        except ImportError:
            rng = np.random.default_rng(i)
            base = rng.integers(0, 256, (256, 340, 3), dtype=np.uint8)
            frames = np.stack([np.roll(base, 4 * t, axis=1) for t in range(T)])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 340, 256, "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_videos(
    out: Path, count: int, seconds: float, fps: int, footage: bool = False, workers: int = 1
) -> list[Path]:
    """``count`` h264 clips of 340x256, drawn by the synth module (or a fallback pattern);
    ``footage``: textured moving camera footage (:mod:`vicmae_data.synth.footage`, calibrated
    to real Kinetics clips' h264 bytes per frame) instead of flat synthetic colour, which
    h264 predicts from frame to frame almost for free."""
    out.mkdir(parents=True, exist_ok=True)
    T = int(seconds * fps)
    jobs = [(out / f"clip{i:03d}.mp4", i, T, fps, footage) for i in range(count)]
    with ProcessPoolExecutor(max(1, min(workers, os.cpu_count() or 1))) as pool:
        return list(pool.map(_write_clip, jobs))


def _transcode(path: Path):
    from vicmae_data.write.transcode import TranscodeSettings, transcode

    return transcode(path, TranscodeSettings(short_side=256))


def to_beton(videos: list[Path], path: Path, workers: int, repeat: int) -> str:
    """Convert with the project's transcoder (PyAV -> short side 256 -> WebP at its default).

    Each video is stored ``repeat`` times so that an epoch is long enough for per-epoch
    set-up (ffcv's page schedule, buffers) to weigh what it does on a real dataset.
    """
    with ProcessPoolExecutor(min(workers, os.cpu_count() or 1)) as pool:
        done = list(pool.map(_transcode, videos))
    samples = [
        Sample(FrameList(t.frames, t.height, t.width), i % 8, {"source": v.name})
        for i, (v, t) in enumerate(zip(videos, done, strict=True))
    ] * repeat
    write_beton(path, samples)
    return str(path)


# --- the contenders -------------------------------------------------------------------


def epoch_timer(make_iter, per_epoch: int):
    """A function that runs one epoch of ``make_iter()`` and returns its samples/s."""

    def epoch() -> float:
        start = time.perf_counter()
        for _ in make_iter():
            pass
        return per_epoch / (time.perf_counter() - start)

    return epoch


def time_epochs(make_iter, rounds: int, per_epoch: int) -> float:
    """Best samples/s over ``rounds`` epochs, after one warm-up epoch.

    The best of several, not the mean: on a shared machine other processes only ever
    slow a round down, so the fastest round is the closest to the loader's own speed.
    """
    epoch = epoch_timer(make_iter, per_epoch)
    epoch()
    return max(epoch() for _ in range(rounds))


def vicmae_timer(beton, batch: int, workers: int, memory: str = "mmap-bounded", **kw):
    """:func:`epoch_timer` of ``make_loader`` (a list of paths mixes them)."""
    loader = make_loader(beton, batch, num_workers=workers, memory=memory, **kw)
    return epoch_timer(lambda: loader, len(loader) * batch)


class ClipDataset(Dataset):
    """What users write: open the file, decode two distant frames, crop, flip."""

    def __init__(self, paths: list[Path], backend: str) -> None:
        self.paths, self.backend = paths, backend
        self.augment = v2.Compose(
            [v2.RandomResizedCrop(224, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def _frames_pyav(self, path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            T = stream.frames
            picks = [np.random.randint(0, T // 2), np.random.randint(T // 2, T)]
            step = int(1 / (stream.average_rate * stream.time_base))
            out = []
            for idx in picks:
                target = stream.start_time + idx * step if stream.start_time else idx * step
                container.seek(target, stream=stream, backward=True)
                for frame in container.decode(stream):
                    if frame.pts >= target:
                        out.append(frame.to_ndarray(format="rgb24"))
                        break
            return out

    def _frames_decord(self, path: Path) -> list[np.ndarray]:
        import decord

        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        T = len(vr)
        picks = [np.random.randint(0, T // 2), np.random.randint(T // 2, T)]
        return list(vr.get_batch(picks).asnumpy())

    def __getitem__(self, i: int) -> torch.Tensor:
        path = self.paths[i]
        frames = self._frames_decord(path) if self.backend == "decord" else self._frames_pyav(path)
        views = [self.augment(torch.from_numpy(f).permute(2, 0, 1)) for f in frames]
        return torch.stack(views)  # (2, 3, 224, 224) uint8


def bench_dataset(paths: list[Path], backend: str, batch: int, workers: int, rounds: int):
    ds = ClipDataset(paths, backend)
    dl = DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=True,
        drop_last=True,
    )  # fmt: skip
    return time_epochs(lambda: dl, rounds, len(dl) * batch)


def clips_timer(paths: list[Path], backend: str, batch: int, workers: int):
    """:func:`epoch_timer` of :class:`~loader_clips.ClipsDataset` under a ``DataLoader``."""
    dl = DataLoader(
        ClipsDataset(paths, backend), batch_size=batch, shuffle=True, num_workers=workers,
        persistent_workers=True, drop_last=True,
    )  # fmt: skip
    return epoch_timer(lambda: dl, len(dl) * batch)


_decode = libwebp.decode_rgb_into


@njit(parallel=True, nogil=True)
def _decode_two(blob, offsets, frame_start, T, H, W, scratch, seed, epoch):
    n = len(T)
    for i in prange(n):
        rng = np.zeros(1, dtype=np.uint64)
        rng_init(seed, epoch, i, rng)
        picks = np.zeros(2, dtype=np.int64)
        distant(T[i], 2, picks, rng)
        for k in range(2):
            f = frame_start[i] + picks[k]
            _decode(blob[offsets[f] : offsets[f + 1]], scratch[i], H[i], W[i])


def bound_timer(beton: str, workers: int, decode=None):
    """libwebp full decodes of the two sampled frames per sample, nothing else: a function
    that decodes one epoch (each call the next epoch's frames) and returns samples/s.
    ``decode``: another compiled loop of the same arguments (the clips' bound)."""
    decode = decode or _decode_two
    f = BetonFile(beton)
    frames, T, H, W = [], [], [], []
    for i in range(len(f)):
        row = f.frames_meta[i]
        frames += f.frame_bytes(i)
        T.append(int(row["num_frames"]))
        H.append(int(row["height"]))
        W.append(int(row["width"]))
    offsets = np.zeros(len(frames) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in frames], out=offsets[1:])
    blob = np.frombuffer(b"".join(frames), dtype=np.uint8)
    T, H, W = (np.array(x, dtype=np.int64) for x in (T, H, W))
    frame_start = np.concatenate([[0], np.cumsum(T)[:-1]])
    scratch = np.zeros((len(T), int((H * W).max()) * 3), dtype=np.uint8)
    epochs = iter(range(1 << 30))

    def epoch() -> float:
        set_num_threads(workers)  # per thread: the loaders' pipeline threads keep theirs
        e = next(epochs)
        start = time.perf_counter()
        decode(blob, offsets, frame_start, T, H, W, scratch, 0, e)
        return len(T) / (time.perf_counter() - start)

    return epoch


def clip_bound_timer(beton: str, workers: int):
    """libwebp full decodes of the 16 frames of each sample's clip (the clip sampler's
    picks), nothing else: the clip loader's bound, as :func:`bound_timer` for pairs."""
    return bound_timer(beton, workers, decode_clips)


def compiled_work_timer(beton: str, workers: int, **decoder_kw):
    """The loader's compiled work alone: ``decode_batch`` over a whole epoch in one parallel
    loop, reading the file's blobs through a memory map, with the decoder ``make_loader``
    builds by default (distant frames, random resized crops, flips), or ``decoder_kw``'s.
    What a loader doing this work can reach at most; the loader adds its pipeline (batches,
    buffers, threads)."""
    f = BetonFile(beton)
    n = len(f)
    blobs = [f.blob(i) for i in range(n)]  # views of the file's memory map
    ptrs = np.array([b.ctypes.data for b in blobs], dtype=np.int64)
    sizes = np.array([b.size for b in blobs], dtype=np.int64)
    meta = f.frames_meta
    T, H, W = (np.asarray(meta[k], dtype=np.int64) for k in ("num_frames", "height", "width"))
    crcs = np.asarray(meta["crc32"], dtype=np.int64)
    d = WebPFramesDecoder(**decoder_kw)  # make_loader's defaults (file 0: seed 0)
    V, R = d.num_views, d.resolution
    settings = np.stack([d.settings, d.video_settings])
    fns = kernel_table()
    views = np.zeros((n, V, R, R, 3), dtype=np.uint8)
    scratch = np.zeros((n, int((H * W).max()) * 3), dtype=np.uint8)
    configs = np.zeros((n, libwebp.CONFIG_WORDS + HEADER_WORDS), dtype=np.int64)
    params = np.zeros((n, V, 6), dtype=np.int32)
    rngs = np.zeros((n, 1), dtype=np.uint64)
    failed = np.zeros(n, dtype=np.int64)
    use_row = np.zeros(n, dtype=np.int64)
    ids = np.arange(n, dtype=np.int64)
    epochs = iter(range(1 << 30))

    def epoch() -> float:
        set_num_threads(workers)
        e = next(epochs)
        start = time.perf_counter()
        decode_batch(fns, ptrs, sizes, T, H, W, crcs, use_row, ids, d.seed, e, d.plan, False,
                     settings, params, rngs, scratch, configs, views, failed,
                     failed.copy())  # fmt: skip
        return n / (time.perf_counter() - start)

    epoch.keep = (f, blobs)  # the memory map outlives the addresses taken from it
    return epoch


# --- report ---------------------------------------------------------------------------


def chart(results: dict[str, float | None], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k, v in results.items() if v]
    values = [results[k] for k in names]
    # Horizontal bars: the contenders' long names stay readable, one per row, never overlap.
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.42 * len(names)))
    # vicmae's rows green, the loaders people use instead blue, the references grey.
    kind = {"PyAV": "#468", "decord": "#468", "bound": "#999", "compiled": "#999"}
    colours = [kind.get(n.split()[0].rstrip(":"), "#2a7") for n in names]
    bars = ax.barh(names, values, color=colours)
    ax.invert_yaxis()  # the table's order, top to bottom
    ax.bar_label(bars, fmt="%.0f", padding=3)
    ax.set_xlabel("videos / s (2 views of 224x224)")
    ax.set_xlim(0, max(values) * 1.12)  # room for the largest bar's figure
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


START_SCRIPT = """
import sys, time
start = time.perf_counter()
from vicmae_data import make_loader
loader = make_loader(sys.argv[1], 16, num_workers=2)
next(iter(loader))
print(time.perf_counter() - start)
"""


def bench_start(beton: str, cache: Path) -> dict[str, float]:
    """Seconds from a fresh process's imports to its first batch: with numba's cache empty
    (``cold``: everything compiles) and again with the cache the first one left (``warm``)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    out = {}
    for name in ("cold", "warm"):
        done = subprocess.run(
            [sys.executable, "-c", START_SCRIPT, beton],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        out[name] = float(done.stdout.strip().splitlines()[-1])
    return out


def parse_workers(text: str) -> list[int]:
    """``"2"`` or ``"1,4,8,16"`` -> worker counts."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers takes N or N,M,..., got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--workers counts must be >= 1, got {text!r}")
    return counts


def images_beton(beton: str, path: Path) -> str:
    """One frame of every video of ``beton`` as a one-frame item (an image dataset)."""
    f = BetonFile(beton)
    samples = []
    for i in range(len(f)):
        row = f.frames_meta[i]
        frame = f.frame_bytes(i)[int(row["num_frames"]) // 2]
        samples.append(Sample(FrameList([frame], int(row["height"]), int(row["width"])), i % 8))
    write_beton(path, samples)
    return str(path)


_T0 = time.monotonic()


def progress(what: str) -> None:
    """One line on stderr as each figure comes in: a run cut short still shows its figures
    and where the time went (the GPU check's log keeps it)."""
    print(f"[bench-loader +{time.monotonic() - _T0:.0f} s] {what}", file=sys.stderr, flush=True)


VIDEOS, IMAGES = "vicmae (ffcv + libwebp)", "vicmae, images alone"
MIXED, BOUND = "vicmae, videos + images 1:1", "bound: libwebp 2 full decodes"
CEILING = "compiled work alone, no pipeline"
CRC = "vicmae, check_crc=True"
CLIPS = f"vicmae clips {CLIP_FRAMES}x{CLIP_STRIDE}"
CLIP_BOUND = f"bound: libwebp {CLIP_FRAMES} full decodes"
CLIP_WORK = "clips: compiled work alone"
PYAV_CLIPS, DECORD_CLIPS = "PyAV clips (seek + decode)", "decord clips (get_batch)"


def best_rounds(timers: dict, e: int) -> dict[str, float]:
    """Round-robin, the best round of each kept: a burst of load from other processes slows
    one round of one contender, not every round of whichever ran during it, so the ratios
    (to the bound, mixed to alone) compare like with like."""
    best = dict.fromkeys(timers, 0.0)
    for r in range(3 * e + 1):  # round 0 warms up (compiles, fills the page cache)
        for k, epoch in timers.items():
            speed = epoch()
            best[k] = max(best[k], speed) if r else 0.0
    return best


def run(beton, images, videos, w, b, e, baselines, scaling=False) -> tuple[dict, dict]:
    # The default memory mode maps the file and drops this process's pages before each
    # batch (RSS bounded by the batch); os_cache keeps every touched page mapped; the
    # process cache reads whole pages per sample touched. Mixed: make_loader([videos,
    # images]), 1:1 in every batch.
    timers = {
        VIDEOS: vicmae_timer(beton, b, w, sampling="distant"),
        CEILING: compiled_work_timer(beton, w),
        BOUND: bound_timer(beton, w),
    }
    if not scaling:
        timers[IMAGES] = vicmae_timer(images, b, w)
        timers[MIXED] = vicmae_timer([beton, images], b, w)
        timers["vicmae, memory=os_cache"] = vicmae_timer(beton, b, w, "os_cache")
        timers["vicmae, memory=process_cache"] = vicmae_timer(beton, b, w, "process_cache")
        timers[CRC] = vicmae_timer(beton, b, w, check_crc=True)
    best = best_rounds(timers, e)
    results: dict[str, float | None] = {}

    def record(name: str, value: float) -> None:
        results[name] = value
        progress(f"{w} workers: {name}: {value:.1f} samples/s")

    for k, v in best.items():
        if k != BOUND:
            record(k, v)
    progress(f"{w} workers: {BOUND}: {best[BOUND]:.1f} samples/s")
    if baselines:
        # ~30x slower than the loader: two timed epochs settle their figure.
        record("PyAV Dataset", bench_dataset(videos, "pyav", b, w, 2))
        try:  # a dev extra: GPU nodes and the offline bundle (make bundle) do not have it
            import decord  # noqa: F401

            record("decord Dataset", bench_dataset(videos, "decord", b, w, 2))
        except ImportError:
            pass
    results[BOUND] = bound = best[BOUND]
    derived = {
        "ratio_to_bound": {k: v / bound for k, v in results.items() if v},
        # The loader against the work it has to do, without the pipeline around it.
        "loader_vs_compiled_work": results[VIDEOS] / results[CEILING],
    }
    if not scaling:
        # Half the samples from each file: the time the two parts take one after the other.
        parts = 2 / (1 / results[VIDEOS] + 1 / results[IMAGES])
        derived["mixed_vs_sum_of_parts"] = results[MIXED] / parts
        derived["mixed_vs_videos_alone"] = results[MIXED] / results[VIDEOS]
        # What verifying every sample's CRC32 as it is read costs (its whole blob is read).
        derived["check_crc_cost"] = 1 - results[CRC] / results[VIDEOS]
    if baselines:
        derived["ratio_to_pyav"] = {k: v / results["PyAV Dataset"] for k, v in results.items() if v}
    return results, derived


def run_clips(beton, videos, w, b, e, baselines) -> tuple[dict, dict]:
    """Clips/s: the loader's 16 x 4 clips against PyAV and decord loading the same kind of
    clip from the mp4 files, and against its bound (libwebp's 16 full decodes)."""
    timers = {
        CLIPS: vicmae_timer(beton, b, w, sampling="clip"),
        CLIP_WORK: compiled_work_timer(beton, w, sampling="clip", num_views=CLIP_FRAMES),
        CLIP_BOUND: clip_bound_timer(beton, w),
    }
    if baselines:
        # In the same rounds, so that load from other processes falls on every contender
        # alike; each video once per epoch (not repeated: they run at a few clips/s/core).
        timers[PYAV_CLIPS] = clips_timer(videos, "pyav", b, w)
        try:
            import decord  # noqa: F401

            timers[DECORD_CLIPS] = clips_timer(videos, "decord", b, w)
        except ImportError:
            pass
    results = best_rounds(timers, e)
    for k, v in results.items():
        progress(f"{w} workers: {k}: {v:.1f} clips/s")
    derived = {
        "clips_per_s_per_core": results[CLIPS] / w,
        "vs_bound": results[CLIPS] / results[CLIP_BOUND],
        "vs_compiled_work": results[CLIPS] / results[CLIP_WORK],
    }
    others = [results[k] for k in (PYAV_CLIPS, DECORD_CLIPS) if k in results]
    if others:
        derived["vs_faster_of_pyav_decord"] = results[CLIPS] / max(others)
    return results, derived


def row_check_seconds(beton: str) -> float:
    """Seconds per sample of the start-up row check (best of 3; the page cache warm)."""
    f = BetonFile(beton)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        check_rows(f)
        times.append(time.perf_counter() - start)
    return min(times) / len(f)


def baseline_notes() -> dict[str, str]:
    """Why a loader is missing from the table (not installed here)."""
    notes: dict[str, str] = {}
    try:
        import decord  # noqa: F401
    except ImportError as exc:
        notes["decord"] = f"not benchmarked: {exc}"
    try:
        import torchcodec  # noqa: F401

        notes["torchcodec"] = "imports, but no Dataset for it is written yet"
    except Exception as exc:
        notes["torchcodec"] = f"not benchmarked: {type(exc).__name__}: {exc}"
    return notes


def clip_report(clip_runs: dict, load: str, footage: bool) -> dict:
    """loader.json's ``clips`` entry: clips/s and ratios per worker count, and the aims."""
    first_w = next(iter(clip_runs))
    results, derived = clip_runs[first_w]
    aims = {"clips vs bound >= 0.85": derived["vs_bound"] >= 0.85}
    if "vs_faster_of_pyav_decord" in derived:
        aims["clips vs faster of PyAV, decord >= 5"] = derived["vs_faster_of_pyav_decord"] >= 5
    return {
        "clips_per_s": results,
        **derived,
        "workers": first_w,
        "by_workers": {str(w): {"clips_per_s": r, **d} for w, (r, d) in clip_runs.items()},
        "clip": f"{CLIP_FRAMES} frames at stride {CLIP_STRIDE}, 224 x 224, one crop per clip",
        "videos": "footage" if footage else "flat synthetic clips (render_clip)",
        "load_before": load,
        "targets": aims,
    }


def load_average() -> str:
    """The machine's load (``/proc/loadavg``'s three averages), noted beside the figures."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def make_report(runs: dict, args: argparse.Namespace, n_videos: int, notes: dict, start) -> dict:
    """loader.json: the first worker count's figures at the top, every count by workers."""
    first_w = next(iter(runs))
    results, derived = runs[first_w]
    ours, bound = results[VIDEOS], results[BOUND]
    report = {
        "samples_per_s": results,
        **derived,
        "workers": first_w,
        "by_workers": {str(w): {"samples_per_s": r, **d} for w, (r, d) in runs.items()},
        "batch_size": args.batch_size,
        "videos": n_videos,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "notes": notes,
        "seconds_to_first_batch": start,
        "targets": {"vs_bound >= 0.9": ours / bound >= 0.9},
    }
    if "mixed_vs_videos_alone" in derived:
        report["targets"]["mixed vs videos alone >= 0.9"] = derived["mixed_vs_videos_alone"] >= 0.9
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, help="folder of .mp4 files (default: generate)")
    parser.add_argument("--num-videos", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (Kinetics: 10 s)")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument(
        "--footage",
        action="store_true",
        help="generate textured camera-like footage (h264 bytes per frame as real Kinetics) "
        "instead of flat synthetic clips; slower to generate; writes loader_footage.json",
    )
    parser.add_argument("--repeat", type=int, default=8, help="epoch = videos x repeat")
    parser.add_argument(
        "--workers",
        type=parse_workers,
        default=[min(2, os.cpu_count() or 1)],
        help="decoding threads (and DataLoader workers for the baselines); a list such as "
        "1,4,8,16 runs every loader at each count",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="3 x this many timed epochs per contender, round-robin; the best is kept",
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip PyAV and decord")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="only the default loader, the decode bound and the PyAV baseline (unless "
        "--no-baselines), at each --workers count: what a worker-scaling run needs",
    )
    parser.add_argument(
        "--clip-rounds",
        type=int,
        default=2,
        help="--rounds for the clip rows (an epoch of clips decodes 8x the frames)",
    )
    parser.add_argument(
        "--no-clips", action="store_true", help="skip the clip rows (16 x 4 clips, their baselines)"
    )
    parser.add_argument(
        "--clips-only",
        action="store_true",
        help="only the clip rows and the row check; written into loader.json's 'clips' entry, "
        "the rest of the file kept",
    )
    parser.add_argument(
        "--start-up",
        action="store_true",
        help="also time two fresh processes to their first batch (numba's cache empty, then "
        "filled)",
    )
    add_output_options(parser)  # benchmarks/out/ unless --update-results
    args = parser.parse_args()
    args.out = output_dir(args)
    torch.set_num_threads(1)  # the DataLoader's workers are the parallelism for baselines

    runs, clip_runs = {}, {}
    notes = baseline_notes()
    start = None
    clips = not args.no_clips and not args.scaling
    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.videos:
            videos = sorted(args.videos.glob("*.mp4"))
            if not videos:
                raise SystemExit(f"error: no .mp4 files in {args.videos}")
        else:
            videos = make_videos(
                tmp / "videos", args.num_videos, args.seconds, args.fps, args.footage,
                max(args.workers),
            )  # fmt: skip
            progress(f"{len(videos)} clips generated")
        beton = to_beton(videos, tmp / "bench.beton", max(args.workers), args.repeat)
        pairs = not args.clips_only
        images = images_beton(beton, tmp / "images.beton") if pairs and not args.scaling else None
        progress("converted to .beton (videos, and unless --scaling, their frames as images)")
        start = bench_start(beton, tmp / "numba-cache") if args.start_up and pairs else None
        row_check = row_check_seconds(beton)
        progress(f"row check at start-up: {row_check * 1e6:.1f} us per sample")
        for w in args.workers:
            if pairs:
                runs[w] = run(
                    beton, images, videos * args.repeat, w, args.batch_size, args.rounds,
                    not args.no_baselines, args.scaling,
                )  # fmt: skip
            if clips or args.clips_only:
                # The baselines' epoch: every video, at least 64 clips (a few batches).
                clip_videos = videos * -(-64 // len(videos))
                clip_runs[w] = run_clips(
                    beton, clip_videos, w, args.batch_size, args.clip_rounds,
                    not args.no_baselines,
                )  # fmt: skip
            # Written after every worker count: a run stopped later keeps these figures.
            path = args.out / ("loader_footage.json" if args.footage else "loader.json")
            if pairs:
                report = make_report(runs, args, len(videos), notes, start)
            else:  # the pair figures stay as they were measured
                report = json.loads(path.read_text()) if path.exists() else {}
            report["row_check_us_per_sample"] = row_check * 1e6
            if clip_runs:
                report["clips"] = clip_report(clip_runs, load, args.footage)
            path.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\nload average before the run: {load}; CPU: {cpu_model()}")
    if runs:
        first_w = args.workers[0]
        chart(
            runs[first_w][0],
            args.out / ("loader_footage.png" if args.footage else "loader.png"),
            f"{len(videos)} clips, {first_w} workers, {cpu_model()}",
        )
    for w, (results, derived) in runs.items():
        bound = results[BOUND]
        pyav = results.get("PyAV Dataset")
        print(f"\n{len(videos)} clips, {w} workers, batch {args.batch_size}, 2 views per sample")
        print(f"{'loader':34s} {'samples/s':>10s} {'x PyAV':>8s} {'x bound':>8s}")
        for k, v in results.items():
            vs_pyav = f"{v / pyav:8.1f}" if pyav else f"{'-':>8s}"
            print(f"{k:34s} {v:10.1f} {vs_pyav} {v / bound:8.2f}")
        print(f"vicmae / its compiled work alone: {derived['loader_vs_compiled_work']:.2f}")
        if "mixed_vs_videos_alone" in derived:
            print(
                f"mixed 1:1 / videos alone: {derived['mixed_vs_videos_alone']:.2f}; "
                f"mixed / sum of its parts: {derived['mixed_vs_sum_of_parts']:.2f}; "
                f"check_crc=True costs {100 * derived['check_crc_cost']:.0f}%"
            )
    for w, (results, derived) in clip_runs.items():
        faster = derived.get("vs_faster_of_pyav_decord")
        print(f"\n{CLIP_FRAMES}x{CLIP_STRIDE} clips, {w} workers, batch {args.batch_size}")
        print(f"{'loader':34s} {'clips/s':>10s} {'per core':>9s} {'x bound':>8s}")
        for k, v in results.items():
            print(f"{k:34s} {v:10.1f} {v / w:9.1f} {v / results[CLIP_BOUND]:8.2f}")
        vs = f"{faster:.1f}x the faster of PyAV and decord, " if faster else ""
        print(f"clips: {vs}{derived['vs_bound']:.2f}x the bound")
    print(f"row check at start-up: {row_check * 1e6:.1f} us per sample")
    if start:
        print(
            f"fresh process to its first batch: {start['cold']:.1f} s with numba's cache "
            f"empty, {start['warm']:.1f} s with it filled"
        )
    for k, v in notes.items():
        print(f"{k}: {v}")
    targets = {**report.get("targets", {}), **report.get("clips", {}).get("targets", {})}
    print(f"targets: {targets}; wrote {path}")


if __name__ == "__main__":
    main()
