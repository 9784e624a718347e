"""Pretraining throughput on one GPU: samples/s, model FLOPs utilisation, peak memory.

Times the engine's own step, ``vicmae.engine.loop.train_step``, with the pretraining job's own
pieces (``vicmae.jobs.pretrain.PretrainLoss``: normalisation and colour augmentation on the
device, reconstruction + lambda x contrastive; the engine's AdamW; bf16 autocast; the
loss scaler; ``--accum`` micro-batches per step), on synthetic uint8 batches already on the
GPU, so the number is the model's, not the loader's (``make bench-loader`` measures that).
FLOPs are counted once with ``torch.utils.flop_counter`` (forward + backward of one
step); MFU divides the achieved FLOP/s by the GPU's dense bf16 peak (a table of known
GPUs, or ``--peak-tflops``). ``--profile N`` then runs N more steps under
``torch.profiler`` and records where the step's device time goes: the kernels taking the
most, and the shares of matrix products, attention, normalisation, the optimiser and the
rest (by kernel name, approximate), and whether timm's attention takes PyTorch's fused
``scaled_dot_product_attention``: what MFU work starts from.

    python benchmarks/bench_train_gpu.py                       # ViT-B/16, 224, bf16
    python benchmarks/bench_train_gpu.py --batch 256 --compile
    make bench-train-gpu BENCH_ARGS="--allow-cpu --arch vit_pico_patch8 --img-size 32 \
        --batch 8 --steps 3 --warmup 1 model.decoder_depth=1"   # smoke test on a CPU

Writes ``benchmarks/results/train_gpu.json`` (GPU runs) with the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"

# Dense bf16 tensor-core peaks (TFLOP/s), from the vendors' data sheets (SXM parts).
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "4090": 165.0,
}


def peak_tflops(name: str) -> float | None:
    """The table's peak for a GPU name (longest matching key first), or None."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_TFLOPS[key]
    return None


# Kernel (GPU) or operator (CPU) names -> what they compute; first match wins, by name only.
KINDS = [
    ("attention", re.compile(r"flash|fmha|attention|sdpa", re.I)),
    ("matmul", re.compile(r"gemm|xmma|cutlass|matmul|addmm|\bmm\b|bmm|linear|sm\d\d_", re.I)),
    ("norm", re.compile(r"norm", re.I)),
    ("optimizer", re.compile(r"adam|foreach|multi_tensor", re.I)),
]


def kind_of(name: str) -> str:
    return next((kind for kind, pattern in KINDS if pattern.search(name)), "other")


def profile_steps(step, steps: int, device: torch.device) -> dict:
    """Run ``steps`` steps under torch.profiler: the top kernels by self time (device
    kernels on CUDA, operators on the CPU), in ms per step, and the share of each kind."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()

    def self_us(event) -> float:
        if not cuda:
            return event.self_cpu_time_total
        # torch >= 2.4 names it self_device_time_total; older, self_cuda_time_total
        return getattr(event, "self_device_time_total", None) or event.self_cuda_time_total

    timed = [(e.key, kind_of(e.key), self_us(e)) for e in prof.key_averages() if self_us(e) > 0]
    total = sum(t for _, _, t in timed) or 1.0
    kinds: dict[str, float] = {}
    for _, kind, t in timed:
        kinds[kind] = kinds.get(kind, 0.0) + t / total
    top = sorted(timed, key=lambda row: -row[2])[:15]
    return {
        "steps": steps,
        "timer": "device kernels" if cuda else "cpu operators",
        "ms_per_step": total / steps / 1e3,
        "share_by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "top": [
            {
                "name": name[:120],
                "kind": kind,
                "ms_per_step": t / steps / 1e3,
                "share": t / total,
            }
            for name, kind, t in top
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="vit_base_patch16")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128, help="samples (video pairs) per forward")
    p.add_argument("--accum", type=int, default=1, help="forwards per optimiser step")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the peak table")
    p.add_argument(
        "--profile", type=int, default=0, metavar="N", help="then profile N steps (0: no)"
    )
    p.add_argument("--allow-cpu", action="store_true", help="smoke-test on a CPU (tiny arch)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (GPU default: results/)")
    p.add_argument("overrides", nargs="*", help="pretraining config key=value (model.*, loss.*)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        gpu = torch.cuda.get_device_name(0)
    elif args.allow_cpu:
        device, gpu = torch.device("cpu"), None
    else:
        print(
            "bench_train_gpu: no CUDA GPU here; this benchmark measures GPU pretraining "
            "throughput. Run it on a GPU machine (or pass --allow-cpu with a tiny --arch "
            "for a smoke test).",
            file=sys.stderr,
        )
        return 2

    from torch.utils.flop_counter import FlopCounterMode

    from vicmae.config import OptimConfig, load_config
    from vicmae.engine.loop import StepInfo, train_step
    from vicmae.engine.param_groups import build_optimizer
    from vicmae.jobs.pretrain import PretrainLoss
    from vicmae.model.vicmae import ViCMAE
    from vicmae_data import Batch

    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = load_config(None, [f"model.arch={args.arch}", f"data.resolution={args.img_size}",
                             "loss.contrastive_start_epoch=0", *args.overrides])  # fmt: skip
    model = ViCMAE(cfg.model).to(device)
    opt = build_optimizer(model, OptimConfig(), device)
    step_model = torch.compile(model) if args.compile else model
    use_amp = args.precision == "bf16" and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)

    b, r = args.batch, args.img_size
    batch = Batch(  # uint8 views as the loader delivers them, already on the device
        torch.randint(0, 256, (b, 2, 3, r, r), dtype=torch.uint8, device=device),
        torch.zeros(b, dtype=torch.long, device=device),
        torch.arange(b, device=device) % 2 == 0,  # half image rows: colour augmentation runs
    )
    loss_fn = PretrainLoss(cfg, lam=np.full(1, cfg.loss.contrastive_weight), device=device)

    def step() -> torch.Tensor:
        micro = iter([batch] * args.accum)
        return train_step(
            step_model,
            opt,
            scaler,
            micro,
            lambda m, x, i: loss_fn(m, x, StepInfo(0, i, 0, 0, 0)),
            accum=args.accum,
            autocast=autocast,
        )[0]

    # FLOPs of one step (forward + backward of every micro-batch), counted on the eager model.
    with FlopCounterMode(display=False) as counter:
        for i in range(args.accum):
            with autocast():
                loss, _ = loss_fn(model, batch, StepInfo(0, i, 0, 0, 0))
            loss.backward()
    opt.zero_grad(set_to_none=True)
    flops_per_step = counter.get_total_flops()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        last = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    if not torch.isfinite(last):
        print(f"bench_train_gpu: loss is {last.item()}; not recording", file=sys.stderr)
        return 1

    step_s = elapsed / args.steps
    achieved = flops_per_step / step_s
    peak = args.peak_tflops or (peak_tflops(gpu) if gpu else None)
    result = {
        "gpu": gpu or f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "arch": args.arch,
        "img_size": args.img_size,
        "mask_ratio": cfg.model.mask_ratio,
        "batch": args.batch,
        "accum": args.accum,
        "step": "vicmae.engine.loop.train_step with vicmae.jobs.pretrain.PretrainLoss",
        "precision": args.precision if use_amp else "fp32",
        "compile": args.compile,
        "steps": args.steps,
        "step_time_s": step_s,
        "samples_per_s": args.batch * args.accum / step_s,
        "views_per_s": 2 * args.batch * args.accum / step_s,
        "gflops_per_sample": flops_per_step / (args.batch * args.accum) / 1e9,
        "achieved_tflops": achieved / 1e12,
        "peak_bf16_tflops": peak,
        "mfu": achieved / (peak * 1e12) if peak else None,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        ),
        "input": "synthetic uint8 views on the device (loader excluded)",
        "fused_attention": _fused_attention(),
    }
    if args.profile > 0:
        result["profile"] = profile_steps(step, args.profile, device)
    rows = [
        ("device", result["gpu"]),
        ("model", f"{args.arch} @ {args.img_size}, mask {cfg.model.mask_ratio}"),
        ("batch / precision", f"{args.batch} x {args.accum} / {result['precision']}"),
        ("samples/s", f"{result['samples_per_s']:.1f}"),
        ("GFLOPs per sample", f"{result['gflops_per_sample']:.1f}"),
        ("achieved TFLOP/s", f"{result['achieved_tflops']:.1f}"),
        ("MFU", f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a"),
        (
            "peak memory",
            f"{result['peak_memory_gib']:.1f} GiB" if result["peak_memory_gib"] else "n/a",
        ),
    ]
    if "profile" in result:
        shares = result["profile"]["share_by_kind"]
        rows.append(("profiled time", ", ".join(f"{k} {v:.0%}" for k, v in shares.items())))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    out = args.out or (RESULTS / "train_gpu.json" if device.type == "cuda" else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def _fused_attention() -> bool | None:
    """Whether timm's Attention calls F.scaled_dot_product_attention (None: unknown)."""
    try:
        from timm.layers import use_fused_attn

        return bool(use_fused_attn())
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
