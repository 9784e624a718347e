"""Conversion speed against its bound, worker scaling, and the WebP encoder settings.

    python benchmarks/bench_convert.py                  # generated 360p clips
    python benchmarks/bench_convert.py --videos DIR     # your class folders (<DIR>/<class>/<file>)

Measures, in one run on one machine:

- bound: decode + resize + WebP-encode of the same clips in a tight single-process loop
  (the same functions conversion calls, nothing else: no listing, cache, or .beton);
- ``convert(..., workers=1)`` and ``workers=2`` end to end (cache, assembly, report
  included): items/s, frames/s, frames/s per worker and the ratio to the bound;
- .beton bytes / source bytes;
- the encoder table: libwebp ``method`` 0..6 at the chosen quality -> frames/s, bytes per
  frame and PSNR, on frames already decoded and resized (encoding alone), which is what
  the default ``--method`` is chosen from; also Pillow's WebP encoder against the
  ``webp`` package's, and swscale's resize against Pillow's.

- the storage table (:mod:`storage`): quality x frame rate x short side -> bytes per frame,
  .beton / source bytes, PSNR against the source resized alike, conversion frames/s and
  loader videos/s, on generated footage that is as hard for encoders as camera footage
  (``--no-storage`` skips it; ``--storage-clips``, ``--storage-seconds`` size it).

Writes ``convert.json`` to ``benchmarks/out/`` (``--update-results``:
``benchmarks/results/``). Timings on a shared machine are noisy: rerun.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from outputs import add_output_options, output_dir
from PIL import Image
from storage import make_footage, print_storage, storage_table

from vicmae_data.synth.media import render_clip, write_video
from vicmae_data.write.convert import convert
from vicmae_data.write.transcode import (
    DEFAULT_METHOD,
    DEFAULT_QUALITY,
    TranscodeSettings,
    encode_webp,
    rgb_frame,
    target_size,
    webp_config,
)


def make_clips(root: Path, count: int, frames: int, height: int, width: int) -> None:
    for i in range(count):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        clip = render_clip(i % 4, frames, height, width, seed=i)  # [T, H, W, 3]
        write_video(folder / f"clip{i:03d}.mp4", clip, fps=25, options={"preset": "veryfast"})


def media_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*") if p.is_file() and not p.name.startswith("."))


def bound(files: list[Path], settings: TranscodeSettings) -> dict:
    """Decode + resize + encode every frame, single process, nothing else."""
    config = webp_config(settings)
    frames = 0
    start = time.perf_counter()
    for path in files:
        with av.open(str(path)) as c:
            for frame in c.decode(video=0):
                size = target_size(frame.height, frame.width, settings.short_side)
                encode_webp(rgb_frame(frame, *size), config)
                frames += 1
    seconds = time.perf_counter() - start
    return {
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "items_per_s": len(files) / seconds,
    }


def run_convert(root: Path, out: Path, workers: int, settings: TranscodeSettings) -> dict:
    start = time.perf_counter()
    report = convert(
        "folder",
        root,
        out,
        workers=workers,
        short_side=settings.short_side,
        quality=settings.quality,
        method=settings.method,
    )
    seconds = time.perf_counter() - start
    frames = report.totals["frames"]
    return {
        "workers": workers,
        "items": report.written,
        "frames": frames,
        "seconds": seconds,
        "items_per_s": report.written / seconds,
        "frames_per_s": frames / seconds,
        "frames_per_s_per_worker": frames / seconds / workers,
        "file_bytes": out.stat().st_size,
        "frame_bytes": report.totals["bytes"],
    }


def decoded_frames(files: list[Path], short_side: int, limit: int) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for path in files:
        with av.open(str(path)) as c:
            for frame in c.decode(video=0):
                out.append(rgb_frame(frame, *target_size(frame.height, frame.width, short_side)))
                if len(out) >= limit:
                    return out
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def encoder_table(frames: list[np.ndarray], quality: int) -> list[dict]:
    rows = []
    for method in range(7):
        config = webp_config(TranscodeSettings(quality=quality, method=method))
        start = time.perf_counter()
        encoded = [encode_webp(f, config) for f in frames]
        seconds = time.perf_counter() - start
        quality_db = np.mean(
            [
                psnr(np.asarray(Image.open(io.BytesIO(e)).convert("RGB")), f)
                for e, f in zip(encoded[:20], frames[:20], strict=False)
            ]
        )
        rows.append(
            {
                "method": method,
                "quality": quality,
                "frames_per_s": len(frames) / seconds,
                "bytes_per_frame": sum(map(len, encoded)) / len(encoded),
                "psnr_db": float(quality_db),
            }
        )
    return rows


def library_choices(
    files: list[Path], frames: list[np.ndarray], settings: TranscodeSettings
) -> dict:
    """The two choices transcode makes, measured: encoder library and resizer."""
    config = webp_config(settings)
    start = time.perf_counter()
    for f in frames:
        encode_webp(f, config)
    webp_pkg = len(frames) / (time.perf_counter() - start)
    start = time.perf_counter()
    for f in frames:
        Image.fromarray(f).save(
            io.BytesIO(), "WEBP", quality=settings.quality, method=settings.method
        )
    pillow = len(frames) / (time.perf_counter() - start)
    n_sws = n_pil = 0
    t_sws = t_pil = 0.0
    for path in files[:4]:
        for use_pillow in (False, True):
            with av.open(str(path)) as c:
                start = time.perf_counter()
                for frame in c.decode(video=0):
                    h, w = target_size(frame.height, frame.width, settings.short_side)
                    if use_pillow:
                        np.asarray(frame.to_image().resize((w, h), Image.Resampling.BILINEAR))
                        n_pil += 1
                    else:
                        rgb_frame(frame, h, w)
                        n_sws += 1
                elapsed = time.perf_counter() - start
            if use_pillow:
                t_pil += elapsed
            else:
                t_sws += elapsed
    return {
        "encode_frames_per_s": {"webp_package": webp_pkg, "pillow": pillow},
        "decode_resize_frames_per_s": {
            "pyav_swscale_area": n_sws / t_sws,
            "pyav_rgb_then_pillow_bilinear": n_pil / t_pil,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, help="class folders of videos to convert")
    parser.add_argument("--clips", type=int, default=48, help="generated clips")
    parser.add_argument("--frames", type=int, default=60, help="frames per generated clip")
    parser.add_argument("--size", default="360x640", help="generated clip HxW")
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY)
    parser.add_argument("--method", type=int, default=DEFAULT_METHOD)
    add_output_options(parser)  # benchmarks/out/ unless --update-results
    parser.add_argument("--no-storage", action="store_true", help="skip the storage table")
    parser.add_argument("--storage-clips", type=int, default=6)
    parser.add_argument("--storage-seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    args.out = output_dir(args) / "convert.json"
    settings = TranscodeSettings(
        short_side=args.short_side, quality=args.quality, method=args.method
    )
    work = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        if args.videos:
            root = args.videos
        else:
            height, width = (int(v) for v in args.size.split("x"))
            root = work / "clips"
            make_clips(root, args.clips, args.frames, height, width)
        files = media_files(root)
        source_bytes = sum(p.stat().st_size for p in files)
        # Warm-up: imports, and the fork server the workers come from (a one-off per run,
        # seconds against the hours a real dataset takes).
        convert(
            "folder", root, work / "warm.beton", workers=2, limit=2, short_side=settings.short_side
        )
        first = bound(files, settings)
        runs = [run_convert(root, work / f"w{w}.beton", w, settings) for w in (1, 2)]
        second = bound(files, settings)
        # The machine is shared: the bound is measured before and after, and averaged.
        the_bound = dict(
            first,
            frames_per_s=(first["frames_per_s"] + second["frames_per_s"]) / 2,
            items_per_s=(first["items_per_s"] + second["items_per_s"]) / 2,
            frames_per_s_before_after=[first["frames_per_s"], second["frames_per_s"]],
        )
        for run in runs:
            run["ratio_to_bound"] = run["frames_per_s_per_worker"] / the_bound["frames_per_s"]
        frames = decoded_frames(files, args.short_side, limit=120)
        table = encoder_table(frames, args.quality)
        choices = library_choices(files, frames, settings)
        storage = None
        if not args.no_storage:
            footage = work / "footage"
            make_footage(footage, args.storage_clips, args.storage_seconds)
            storage = storage_table(footage, work / "storage", args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "source": str(args.videos)
        if args.videos
        else f"generated {args.clips} clips "
        f"{args.size} x {args.frames} frames (h264, synthetic content)",
        "settings": {"short_side": args.short_side, "quality": args.quality, "method": args.method},
        "items": len(files),
        "source_bytes": source_bytes,
        "bound": the_bound,
        "convert": runs,
        "scaling_2_over_1": runs[1]["frames_per_s"] / runs[0]["frames_per_s"],
        "beton_over_source_bytes": runs[0]["file_bytes"] / source_bytes,
        "frames_over_source_bytes": runs[0]["frame_bytes"] / source_bytes,
        "encoder": table,
        "choices": choices,
        "storage": storage,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    _print(result, args.out)


def _print(r: dict, out: Path) -> None:
    b = r["bound"]
    print(f"{r['items']} items, {b['frames']} frames; source {r['source_bytes'] / 1e6:.1f} MB")
    print(f"{'':>22} {'items/s':>8} {'frames/s':>9} {'fr/s/worker':>12} {'vs bound':>9}")
    print(
        f"{'bound (1 process)':>22} {b['items_per_s']:8.2f} {b['frames_per_s']:9.1f} "
        f"{b['frames_per_s']:12.1f} {1:9.2f}"
    )
    for run in r["convert"]:
        print(
            f"{'convert workers=' + str(run['workers']):>22} {run['items_per_s']:8.2f} "
            f"{run['frames_per_s']:9.1f} {run['frames_per_s_per_worker']:12.1f} "
            f"{run['ratio_to_bound']:9.2f}"
        )
    print(
        f"scaling workers 2/1: {r['scaling_2_over_1']:.2f}x; "
        f".beton / source bytes: {r['beton_over_source_bytes']:.2f} "
        f"(frames only: {r['frames_over_source_bytes']:.2f})"
    )
    print(f"{'method':>6} {'frames/s':>9} {'bytes/frame':>12} {'PSNR dB':>8}")
    for row in r["encoder"]:
        print(
            f"{row['method']:>6} {row['frames_per_s']:9.1f} {row['bytes_per_frame']:12.0f} "
            f"{row['psnr_db']:8.2f}"
        )
    c = r["choices"]
    print("encode frames/s:", {k: round(v, 1) for k, v in c["encode_frames_per_s"].items()})
    print(
        "decode+resize frames/s:",
        {k: round(v, 1) for k, v in c["decode_resize_frames_per_s"].items()},
    )
    if r["storage"]:
        print_storage(r["storage"])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
