"""What the checks of issue 19 cost: a .beton's identity (resume) and a checkpoint's CRC32s.

    python benchmarks/bench_guards.py                       # ViT-B checkpoint, 50,000 samples
    python benchmarks/bench_guards.py --samples 5000 --arch vit_small_patch16   # quicker

1. ``beton_identity`` (size, samples, class list, blake2b of the tables), which every
   training run computes for each file at start and ``--resume`` compares: on a generated
   file of ``--samples`` one-frame samples. It reads only the tables (~50 bytes a sample,
   never the frames), so the figure per sample projects to a file of any size;
   the projection to Kinetics-400's ~240,000 training clips is printed.
2. ``verify_checkpoint`` (every zip record's CRC32, before ``torch.load``) on a
   pretraining checkpoint of ``--arch`` with AdamW's state (what ``last.pt`` holds),
   next to ``torch.load`` of the same file, both from the page cache (run twice).

Writes ``benchmarks/results/guards.json``. Timings on a shared machine are noisy: rerun.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vicmae.config import load_config, to_dict
from vicmae.engine.checkpoint import load_checkpoint, save_checkpoint, verify_checkpoint
from vicmae.model.vicmae import ViCMAE
from vicmae_data.format.beton import Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.format.manifest import Manifest
from vicmae_data.inspect.identity import beton_identity
from vicmae_data.write.beton_writer import write_beton

RESULTS = Path(__file__).parent / "results" / "guards.json"
KINETICS_400_TRAIN = 240_000  # clips, about


def _median_time(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def identity_cost(work: Path, samples: int, repeat: int) -> dict:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="WEBP")
    frame = FrameList([buf.getvalue()], 16, 16)
    items = [Sample(frame, i % 400, {"source": f"v{i}", "class_name": f"c{i % 400}"})
             for i in range(samples)]  # fmt: skip
    path = write_beton(
        work / "many.beton", items, manifest=Manifest(tuple(f"c{k}" for k in range(400)))
    )
    seconds = _median_time(lambda: beton_identity(path), repeat)
    per_sample = seconds / samples
    return {
        "samples": samples,
        "file_bytes": path.stat().st_size,
        "seconds": seconds,
        "us_per_sample": 1e6 * per_sample,
        "projected_seconds_kinetics400": per_sample * KINETICS_400_TRAIN,
    }


def checkpoint_cost(work: Path, arch: str, repeat: int) -> dict:
    cfg = load_config(None, [f"model.arch={arch}"])
    model = ViCMAE(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters())
    for p in model.parameters():  # AdamW's two moments per parameter, as in last.pt
        optimizer.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p),
                              "exp_avg_sq": torch.zeros_like(p)}  # fmt: skip
    state = {"kind": "pretrain", "model": model.state_dict(), "config": to_dict(cfg),
             "optimizer": optimizer.state_dict(), "step": 1}  # fmt: skip
    path = save_checkpoint(work / "last.pt", state)
    del state, optimizer, model
    verify_checkpoint(path)  # into the page cache
    verify = _median_time(lambda: verify_checkpoint(path), repeat)
    load = _median_time(lambda: torch.load(path, map_location="cpu", weights_only=True), repeat)
    both = _median_time(lambda: load_checkpoint(path), repeat)
    size = path.stat().st_size
    return {
        "arch": arch,
        "file_bytes": size,
        "verify_seconds": verify,
        "verify_gb_per_s": size / verify / 1e9,
        "torch_load_seconds": load,
        "load_checkpoint_seconds": both,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--arch", default="vit_base_patch16")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ident = identity_cost(Path(tmp), args.samples, args.repeat)
        print(
            f"beton_identity: {ident['samples']:,} samples ({ident['file_bytes'] / 1e6:.1f} MB) "
            f"in {1e3 * ident['seconds']:.1f} ms = {ident['us_per_sample']:.2f} us/sample; "
            f"Kinetics-400 train (~{KINETICS_400_TRAIN:,} clips): "
            f"~{1e3 * ident['projected_seconds_kinetics400']:.0f} ms, whatever its size"
        )
        ckpt = checkpoint_cost(Path(tmp), args.arch, args.repeat)
        print(
            f"checkpoint {ckpt['arch']} + AdamW ({ckpt['file_bytes'] / 1e9:.2f} GB): CRC32 check "
            f"{ckpt['verify_seconds']:.2f} s ({ckpt['verify_gb_per_s']:.2f} GB/s), torch.load "
            f"{ckpt['torch_load_seconds']:.2f} s, load_checkpoint (both) "
            f"{ckpt['load_checkpoint_seconds']:.2f} s"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    RESULTS.write_text(json.dumps({"identity": ident, "checkpoint": ckpt, **machine}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
