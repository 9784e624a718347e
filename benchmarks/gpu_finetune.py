"""The fine-tune step on one GPU: samples/s, MFU from a stated FLOP formula, peak memory.

Times the engine's own step (``vicmae.engine.loop.train_step``) with the fine-tune job's own
pieces, built from a preset (``--config``): the encoder under its head
(``vicmae.jobs.finetune.build_classifier``: ViT-B/16 inflated to a space-time ViT over
16-frame clips with 2-frame tubelets for ``k400_vitb``, the 2-D ViT for ``places365_vitb``),
``FinetuneLoss`` (normalisation, RandomErasing, Mixup/CutMix with label smoothing in the soft
targets, on the device), layer-decayed AdamW, bf16 autocast, gradient clipping as the preset
says, on synthetic uint8 batches already on the GPU (the loader and RandAugment, which runs
on CPU threads before the step, are measured end to end by ``gpu_check.py``). The batch is
the largest of ``--batches`` that fits (a smaller one is tried only after running out of
memory); its peak memory is recorded.

**FLOPs** (matrix products only, a multiply-add counted as 2, as ``FlopCounterMode`` and MFU
figures count them): a ViT of width D, depth L and MLP ratio 4 over P patch (or tubelet)
tokens of ``c x t x p x p`` values plus a class token (N = P + 1 tokens) and a C-way head
does, per sample, in its forward pass::

    F = 2 P (c t p^2) D  +  L (24 N D^2 + 4 N^2 D)  +  2 D C

(the embedding; per block the q, k, v projections 6 N D^2, the output projection 2 N D^2,
the MLP 16 N D^2, and Q K^T and A V 4 N^2 D; the head). Training counts 3 F (the backward
pass does twice the forward's products). ViT-B/16 on 16 x 224 x 224 clips with tubelet 2
(P = 8 x 14 x 14 = 1568, 400 classes): F = 361.0 GFLOP, 1,082.9 GFLOP per clip trained; on
a 224 image (P = 196, 1,000 classes): F = 35.1 GFLOP, 105.4 trained (tables that give
ViT-B/16 17.6 GFLOPs per image, or 180 per such clip, count a multiply-add once).
MFU = 3 F x samples/s / the GPU's dense bf16 peak (``bench_train_gpu.PEAK_BF16_TFLOPS``).
Every run also counts one step of the real model with ``torch.utils.flop_counter``'s
``FlopCounterMode`` (math attention, so that the attention's products are seen on every
device) and records both: the forward agrees with F, and the counted training step is 3 F
less the embedding's forward (no gradient is taken for the input pixels).

    python benchmarks/gpu_finetune.py --config k400_vitb --out ft_video.json      # clips
    python benchmarks/gpu_finetune.py --config places365_vitb --batches 128,64,32  # images
    python benchmarks/gpu_finetune.py --config k400_vitb --allow-cpu --arch vit_pico_patch8 \
        --img-size 32 --frames 4 --batches 4 --steps 1 --warmup 1   # rehearsal on a CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vicmae_data.atomic import write_text_atomic


@dataclass(frozen=True)
class ViTShape:
    """What the FLOP formula needs of a ViT classifier (see the module docstring)."""

    embed_dim: int  # D
    depth: int  # L
    patches: int  # P, tokens before the class token
    patch_values: int  # c * t * p * p, values embedded into one token
    num_classes: int  # C
    mlp_ratio: float = 4.0

    @property
    def tokens(self) -> int:
        return self.patches + 1  # N: the class token joins the sequence


def vit_shape(
    arch: str, img_size: int, num_classes: int, frames: int = 1, tubelet: int = 1
) -> ViTShape:
    """The shape of ``arch`` on ``img_size`` images (``frames == 1``) or on clips of
    ``frames`` frames cut into ``tubelet``-frame tokens."""
    from vicmae.model.vit import vit_arch

    a = vit_arch(arch)
    grid = img_size // a.patch_size
    t = tubelet if frames > 1 else 1
    return ViTShape(
        embed_dim=a.embed_dim, depth=a.depth, patches=(frames // t) * grid * grid,
        patch_values=3 * t * a.patch_size**2, num_classes=num_classes,
    )  # fmt: skip


def embed_flops(s: ViTShape) -> int:
    """The patch (tubelet) embedding's forward FLOPs per sample: 2 P (c t p^2) D."""
    return 2 * s.patches * s.patch_values * s.embed_dim


def forward_flops(s: ViTShape) -> int:
    """Forward FLOPs per sample: 2 P (c t p^2) D + L (24 N D^2 + 4 N^2 D) + 2 D C, with the
    MLP's 16 N D^2 scaled by ``mlp_ratio / 4``."""
    n, d = s.tokens, s.embed_dim
    mlp = int(4 * n * d * d * s.mlp_ratio)  # two products of N x D x (ratio D), x 2
    block = 6 * n * d * d + 2 * n * d * d + mlp + 4 * n * n * d
    return embed_flops(s) + s.depth * block + 2 * d * s.num_classes


def train_flops(s: ViTShape) -> int:
    """Training FLOPs per sample: 3 x the forward's (backward = 2 x forward)."""
    return 3 * forward_flops(s)


def count_flops(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs of ``model`` on ``x`` counted by
    ``FlopCounterMode``, with PyTorch's math attention: the fused kernels are not counted on
    every device (the CPU's is not), the math path's batched products are."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fwd:
        out = model(x)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as bwd:
        out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return fwd.get_total_flops(), fwd.get_total_flops() + bwd.get_total_flops()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="k400_vitb", help="fine-tune preset (name or YAML)")
    p.add_argument("--arch", default=None, help="override the preset's model.arch")
    p.add_argument("--img-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--frames", type=int, default=None, help="clip frames (default: preset's)")
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="head size (default 400 for clips, Kinetics-400; 1000 for images)",
    )
    p.add_argument("--batches", default="32,16,8", help="per-device batches, largest first")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the peak table")
    p.add_argument("--allow-cpu", action="store_true", help="rehearse on a CPU (tiny arch)")
    p.add_argument("--out", type=Path, default=None, help="JSON to write")
    return p.parse_args(argv)  # fmt: skip


def build(args: argparse.Namespace, device: torch.device):
    """(config, model, loss, optimiser, shape) as ``vicmae train finetune`` builds them."""
    from timm.optim import param_groups_layer_decay

    from vicmae.config import FinetuneConfig, load_config
    from vicmae.config.resolve import CLIP_SAMPLERS
    from vicmae.engine.param_groups import build_optimizer
    from vicmae.jobs.finetune import NO_WEIGHT_DECAY, FinetuneLoss, build_classifier
    from vicmae.model.vit import ViTEncoder

    overrides = [f"model.arch={args.arch}"] if args.arch else []
    if args.img_size:
        overrides.append(f"data.resolution={args.img_size}")
    if args.frames:
        overrides.append(f"data.clip_frames={args.frames}")
    cfg = load_config(args.config, overrides, cls=FinetuneConfig)
    m, d, o = cfg.model, cfg.data, cfg.optim
    clips = d.sampling in CLIP_SAMPLERS
    res = d.resolution or 224
    classes = args.num_classes or (400 if clips else 1000)
    torch.manual_seed(0)
    encoder = ViTEncoder.from_arch(m.arch, res, drop_path=m.drop_path)
    if m.learn_pos_embed:
        encoder.learn_pos_embed()
    model = build_classifier(encoder, classes, m, d).to(device)
    loss = FinetuneLoss(cfg.augment, classes, device, clips)
    groups = param_groups_layer_decay(
        model, o.weight_decay, NO_WEIGHT_DECAY,
        layer_decay=o.layer_decay if o.layer_decay is not None else 1.0,
    )  # fmt: skip
    opt = build_optimizer(groups, o, device)
    frames = d.clip_frames if clips else 1
    shape = vit_shape(m.arch, res, classes, frames, m.tubelet if clips else 1)
    return cfg, model, loss, opt, shape, frames, res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if torch.cuda.is_available():
        device, gpu = torch.device("cuda"), torch.cuda.get_device_name(0)
    elif args.allow_cpu:
        device, gpu = torch.device("cpu"), None
    else:
        print("gpu_finetune: no CUDA GPU here (pass --allow-cpu with a tiny --arch to rehearse)",
              file=sys.stderr)  # fmt: skip
        return 2
    from bench_train_gpu import peak_tflops

    from vicmae.engine.loop import train_step
    from vicmae.engine.step_info import StepInfo
    from vicmae.model.video_vit import clips_from_loader
    from vicmae_data import Batch

    torch.backends.cuda.matmul.allow_tf32 = True
    cfg, model, loss_fn, opt, shape, frames, res = build(args, device)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    # The formula against FlopCounterMode on two samples of the real model (cheap).
    x2 = torch.randn(2, frames, 3, res, res, device=device)  # (2, V, 3, H, W)
    x2 = clips_from_loader(x2) if frames > 1 else x2[:, 0]  # (2, 3, T, H, W) or (2, 3, H, W)
    counted_fwd, counted_train = count_flops(model, x2)
    check = {
        "formula_forward_gflops": forward_flops(shape) / 1e9,
        "counted_forward_gflops": counted_fwd / 2 / 1e9,
        "formula_train_gflops": train_flops(shape) / 1e9,
        "counted_train_gflops": counted_train / 2 / 1e9,
        "counted_train_expected_gflops": (train_flops(shape) - embed_flops(shape)) / 1e9,
        "note": "per sample; counted with math attention; the counted step lacks the "
        "embedding's input gradient (3 F - embedding forward)",
    }
    print(f"GFLOPs per sample: forward F by the formula {check['formula_forward_gflops']:.6g}, "
          f"by FlopCounterMode {check['counted_forward_gflops']:.6g}; a training step 3F "
          f"{check['formula_train_gflops']:.6g}, counted {check['counted_train_gflops']:.6g} "
          f"(3F - embedding: {check['counted_train_expected_gflops']:.6g})")  # fmt: skip

    def step(batch) -> torch.Tensor:
        return train_step(model, opt, scaler, iter([batch]),
                          lambda m, x, i: loss_fn(m, x, StepInfo(0, i, 0, 0, 0)),
                          accum=1, autocast=autocast, clip_grad=cfg.optim.clip_grad)  # fmt: skip

    tried: list[dict] = []
    result: dict | None = None
    for b in (int(x) for x in args.batches.split(",")):
        try:
            batch = synthetic_batch(b, frames, res, shape.num_classes, device, Batch)
            result = time_steps(step, batch, args.steps, args.warmup, device)
            tried.append({"batch": b, "status": "PASS"})
            break
        except torch.OutOfMemoryError:  # only running out of memory tries a smaller batch
            tried.append({"batch": b, "status": "OOM"})
            batch = None
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.empty_cache()
    if result is None:
        print(f"gpu_finetune: no batch of {args.batches} fits", file=sys.stderr)
        return 1
    peak = args.peak_tflops or (peak_tflops(gpu) if gpu else None)
    achieved = train_flops(shape) * result["samples_per_s"]
    a = cfg.augment
    result.update(
        gpu=gpu or f"cpu ({platform.processor() or platform.machine()})",
        torch=torch.__version__, cuda=torch.version.cuda, config=args.config,
        kind="clips" if frames > 1 else "images", arch=cfg.model.arch, img_size=res,
        frames=frames, tubelet=cfg.model.tubelet if frames > 1 else None,
        tokens=shape.tokens, num_classes=shape.num_classes, batches_tried=tried,
        precision="bf16" if cuda else "fp32",
        step="vicmae.engine.loop.train_step with vicmae.jobs.finetune.FinetuneLoss",
        augment_in_step={"mixup": a.mixup, "cutmix": a.cutmix, "switch_prob": a.switch_prob,
                         "label_smoothing": a.label_smoothing, "reprob": a.reprob,
                         "remode": a.remode},
        randaugment=f"{a.randaugment}: on loader threads before the step (end to end only)",
        flop_formula="3 x [2 P (c t p^2) D + L (24 N D^2 + 4 N^2 D) + 2 D C] per sample",
        gflops_per_sample=train_flops(shape) / 1e9, flops_check=check,
        achieved_tflops=achieved / 1e12, peak_bf16_tflops=peak,
        mfu=achieved / (peak * 1e12) if peak else None,
        input="synthetic uint8 batches on the device (loader and RandAugment excluded)",
    )  # fmt: skip
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a"
    mem = result["peak_memory_gib"]
    print(f"{args.config}: {result['arch']} {result['kind']} b{result['batch']}: "
          f"{result['samples_per_s']:.1f} samples/s, {result['gflops_per_sample']:.4g} "
          f"GFLOP/sample, MFU {mfu}, peak {f'{mem:.1f} GiB' if mem else 'n/a'}")  # fmt: skip
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2, default=str) + "\n")
    return 0


def synthetic_batch(b: int, frames: int, res: int, classes: int, device: torch.device, Batch):
    """A batch as the loader delivers it (uint8 views (B, V, 3, H, W)), already on the device."""
    g = torch.Generator(device=device).manual_seed(1)
    views = torch.randint(0, 256, (b, frames, 3, res, res), dtype=torch.uint8, device=device,
                          generator=g)  # fmt: skip
    labels = torch.randint(0, classes, (b,), device=device, generator=g)
    return Batch(views, labels, torch.zeros(b, dtype=torch.bool, device=device))


def time_steps(step, batch, steps: int, warmup: int, device: torch.device) -> dict:
    """Warm up, then time ``steps`` steps on ``batch``; raises OutOfMemoryError."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        step(batch)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        last = step(batch)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    if not bool(torch.isfinite(last).all()):
        raise RuntimeError(f"loss is {last.tolist()}")
    b = len(batch.labels)
    return {
        "batch": b, "steps": steps, "step_time_s": elapsed / steps,
        "samples_per_s": b * steps / elapsed,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
