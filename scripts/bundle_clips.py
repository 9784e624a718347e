"""Kinetics-like clips for the offline bundle's .beton (``make bundle``).

Writes ``COUNT`` real h264 clips of 340x256 (Kinetics' usual size after its 256 short-side
resize) in class folders, ``ROOT/class<k>/clip<i>.mp4``, drawn by the synth module (a
coloured shape over a noisy background: ~12 KB per WebP frame at q90, like real footage at
256 short side). ``vicmae-data convert folder`` then turns them into the .beton.

    python scripts/bundle_clips.py --out build/clips --count 512 --frames 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vicmae_data.synth.media import render_clip, write_video

CLASSES = 8  # distinct colours in the synth palette: labels a probe can tell apart


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write class folders into")
    p.add_argument("--count", type=int, default=512, help="clips")
    p.add_argument("--frames", type=int, default=2, help="frames per clip")
    p.add_argument("--fps", type=int, default=30)
    args = p.parse_args()
    if args.count < 1 or args.frames < 1:
        raise SystemExit("error: --count and --frames must be >= 1")
    for i in range(args.count):
        label = i % CLASSES
        folder = args.out / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        frames = render_clip(label, args.frames, 256, 340, seed=i)  # (T, 256, 340, 3)
        write_video(folder / f"clip{i:05d}.mp4", frames, fps=args.fps)
    print(f"wrote {args.count} clips of {args.frames} frames (340x256) under {args.out}")


if __name__ == "__main__":
    main()
