"""The whole fine-tune step with RandAugment inside it, and with RandAugment on threads.

Issue 17: timm's RandAugment runs per sample in PIL (~1.2 ms per 224 image on one core),
and inside the training step it would idle a GPU most of the time. The fine-tune job now
applies it on a thread pool to batch n+1 while batch n trains
(``vicmae.engine.randaugment.RandAugmentLoader``). This script measures, on this machine:

- RandAugment (``rand-m9-mstd0.5-inc1``, Table 6) per image at ``--res``, on one thread,
  and the pool's images/s with ``--threads`` threads;
- the whole step, from a real .beton through the loader, RandAugment, the job's
  ``FinetuneLoss`` (normalise, RandomErasing, Mixup/CutMix), the model's forward and
  backward and AdamW (the engine's ``train_step``): RandAugment **inline** (each sample
  augmented in the step, as before) against **threaded** (the job's way), seconds per step,
  the part of it spent in RandAugment (inline) and the time the step waited for its batch
  (threaded), as the mean of ``--rounds`` alternated runs of each;
- from the pool's rate: the CPU cores RandAugment needs to keep up with a GPU step of
  ``--gpu-images-per-s`` (default: the issue's ViT-B estimate for an H100, 128 images in
  ~35 ms), which this CPU-only machine cannot measure.

    python benchmarks/bench_finetune_step.py                     # vit_tiny_patch16 at 224
    python benchmarks/bench_finetune_step.py --arch vit_pico_patch8 --steps 3   # quicker

Prints the figures and writes ``finetune_step.json`` (``benchmarks/out/``, or
``benchmarks/results/`` with ``--update-results``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from outputs import add_output_options, output_dir


def write_images(path: Path, n: int, side: int) -> Path:
    """``n`` still images (smooth noise, 4 classes) as a real .beton of WebP frames."""
    import io

    from PIL import Image

    from vicmae_data.format.beton import Sample
    from vicmae_data.format.frames import FrameList
    from vicmae_data.write.beton_writer import write_beton

    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side, side), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="WEBP", quality=85)
        meta = {"source": f"img{i}", "class_name": f"c{i % 4}", "dataset": "bench"}
        samples.append(Sample(FrameList([buf.getvalue()], side, side), i % 4, meta))
    return write_beton(path, samples)


def time_randaugment(ra, res: int, threads: int, n: int = 256) -> tuple[float, float]:
    """(ms per image on one thread, images/s on ``threads`` threads)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (1, res, res, 3), dtype=np.uint8) for _ in range(n)]
    for i in range(8):  # warm-up
        ra(frames[i], (0, i))
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        ra(f, (1, i))
    one = (time.perf_counter() - t0) / n * 1e3
    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda a: ra(a[1], (2, a[0])), enumerate(frames)))
        rate = n / (time.perf_counter() - t0)
    return one, rate


class InlineRandAugment:
    """The step's old way: RandAugment inside the loss, sample after sample (timing only)."""

    def __init__(self, loss, ra, seed: int) -> None:
        self.loss, self.ra, self.seed = loss, ra, seed
        self.seconds = 0.0  # spent augmenting

    def __call__(self, model, batch, at):
        t = time.perf_counter()
        views = batch.views.permute(0, 1, 3, 4, 2)  # (B, V, H, W, 3)
        out = np.stack([self.ra(views[b].numpy(), (self.seed, int(batch.indices[b])))
                        for b in range(len(views))])  # fmt: skip
        batch = batch._replace(views=torch.from_numpy(out).permute(0, 1, 4, 2, 3))
        self.seconds += time.perf_counter() - t
        return self.loss(model, batch, at)


def time_steps(args, beton: str, threaded: bool) -> dict[str, float]:
    """Seconds per optimiser step and seconds waited for batches, over ``args.steps``."""
    from timm.optim import param_groups_layer_decay

    from vicmae.config import FinetuneConfig, load_config
    from vicmae.engine.loop import train_step
    from vicmae.engine.param_groups import build_optimizer
    from vicmae.engine.randaugment import ClipRandAugment, RandAugmentLoader
    from vicmae.engine.step_info import StepInfo
    from vicmae.jobs.finetune import NO_WEIGHT_DECAY, FinetuneLoss, build_classifier
    from vicmae.model.vit import ViTEncoder
    from vicmae_data import make_loader

    cfg = load_config(None, [f"model.arch={args.arch}"], cls=FinetuneConfig)
    torch.manual_seed(0)
    encoder = ViTEncoder.from_arch(args.arch, args.res, drop_path=0.1).learn_pos_embed()
    model = build_classifier(encoder, 4, cfg.model, cfg.data)
    loss = FinetuneLoss(cfg.augment, 4, torch.device("cpu"), clips=False)
    groups = param_groups_layer_decay(model, 0.05, NO_WEIGHT_DECAY, layer_decay=0.65)
    optimizer = build_optimizer(groups, cfg.optim, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ra = ClipRandAugment(cfg.augment.randaugment, args.res)
    loader = make_loader(beton, args.batch, num_workers=args.workers, num_views=1,
                         resolution=args.res, train=True)  # fmt: skip
    fn = loss
    if threaded:
        loader = RandAugmentLoader(loader, ra, args.threads, seed=0)
    else:
        fn = InlineRandAugment(loss, ra, 0)
    batches = iter(loader)
    waited = 0.0

    class Timed:
        def __next__(self):
            nonlocal waited, batches
            t = time.perf_counter()
            try:
                b = next(batches)
            except StopIteration:
                batches = iter(loader)
                b = next(batches)
            waited += time.perf_counter() - t
            return b

    timed = Timed()
    step = lambda m, b, i: fn(m, b, StepInfo(0, i, 0, 0, 0))  # noqa: E731
    kw = dict(accum=1, autocast=contextlib.nullcontext)
    for _ in range(args.warmup):
        train_step(model, optimizer, scaler, timed, step, **kw)
    waited = 0.0
    if not threaded:
        fn.seconds = 0.0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, optimizer, scaler, timed, step, **kw)
    elapsed = time.perf_counter() - t0
    if threaded:
        loader.close()
    augmenting = 0.0 if threaded else fn.seconds / args.steps
    return {"s_per_step": elapsed / args.steps, "wait_s_per_step": waited / args.steps,
            "randaugment_s_per_step_in_step": augmenting}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_tiny_patch16")
    parser.add_argument("--res", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32, help="images per step")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="inline, threaded, ... rounds")
    parser.add_argument("--workers", type=int, default=1, help="loader decoding threads")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1,
        help="RandAugment threads (the job: augment.threads, else data.num_workers)",
    )  # fmt: skip
    parser.add_argument(
        "--gpu-images-per-s", type=float, default=128 / 0.035,
        help="a GPU step's images/s to size cores for (issue 17: ViT-B on an H100)",
    )  # fmt: skip
    add_output_options(parser)
    args = parser.parse_args()
    out = output_dir(args)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from vicmae.engine.randaugment import ClipRandAugment

    ra = ClipRandAugment("rand-m9-mstd0.5-inc1", args.res)
    one_ms, pool_rate = time_randaugment(ra, args.res, args.threads)
    print(f"RandAugment rand-m9-mstd0.5-inc1 at {args.res}: {one_ms:.2f} ms per image on one "
          f"thread; {pool_rate:.0f} images/s on {args.threads} threads")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        beton = str(write_images(Path(tmp) / "images.beton", 4 * args.batch, args.res + 32))
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(args.rounds):  # alternated: the machine's drift hits both alike
            for mode in (False, True):
                runs[mode].append(time_steps(args, beton, threaded=mode))
    inline, threaded = ({k: float(np.mean([r[k] for r in runs[mode]])) for k in runs[mode][0]}
                        for mode in (False, True))  # fmt: skip
    per_core = 1e3 / one_ms
    cores = args.gpu_images_per_s / per_core
    print(f"  inline: {inline['s_per_step']:.3f} s per step of {args.batch} ({args.arch}), "
          f"{inline['randaugment_s_per_step_in_step']:.3f} s of it in RandAugment, "
          f"{inline['wait_s_per_step']:.3f} s waiting for the loader")  # fmt: skip
    print(f"threaded: {threaded['s_per_step']:.3f} s per step, "
          f"{threaded['wait_s_per_step']:.3f} s of it waiting for the augmented batch "
          "(the rest of RandAugment ran beside the step, on the same cores here)")  # fmt: skip
    print(f"to feed {args.gpu_images_per_s:.0f} images/s (a GPU step, not measured here) "
          f"RandAugment needs ~{cores:.1f} cores at {per_core:.0f} images/s per core")  # fmt: skip
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]},
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "update_results")},
        "randaugment_ms_per_image_one_thread": one_ms,
        "randaugment_images_per_s_pool": pool_rate,
        "step_inline": inline, "step_threaded": threaded,
        "rounds": {"inline": runs[False], "threaded": runs[True]},
        "cores_for_gpu_images_per_s": cores,
    }  # fmt: skip
    path = out / "finetune_step.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
