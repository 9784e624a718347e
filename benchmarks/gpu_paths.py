"""The CUDA-only code paths, each exercised once: PASS, FAIL (with the error) or SKIP.

- ``bf16_autocast``: the model's training forward under ``torch.autocast(bfloat16)``: its
  linear layers compute in bf16, and the loss and every gradient are finite;
- ``fused_adamw``: the trainer's optimiser on CUDA is AdamW with ``fused=True``; one step
  changes the weights and keeps them finite;
- ``sync_batchnorm``: a one-rank NCCL process group; the model with its BatchNorm layers
  converted to SyncBatchNorm trains one step under DDP. With one rank SyncBatchNorm falls
  back to plain batch norm, so torch's SyncBatchNorm function (the path it takes with more
  ranks: statistics all-gathered over NCCL) is also run directly and compared with
  ``functional.batch_norm``, forward and backward;
- ``compile``: ``torch.compile(model)``, one bf16 training step: finite, close to eager;
- ``finetune_accum``: ``vicmae train finetune`` for one optimiser step at the recipe's
  global batch (1024, paper Table 6) made of accumulated micro-batches.

Each check runs on its own; one failing does not stop the others. On a CPU (``--cpu``)
the checks that need CUDA are SKIP and the others run with tiny settings.

    python benchmarks/gpu_paths.py --beton bundle/data/clips.beton --out gpu_paths.json
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

from vicmae_data.atomic import write_text_atomic

# A small model: these checks are about code paths, not speed (the benchmarks use ViT-B).
TINY = dict(
    arch="vit_pico_patch8", img_size=64, decoder_dim=64, decoder_depth=1, decoder_heads=2,
    projector_dims=(128, 128, 128),
)  # fmt: skip
FINETUNE_GLOBAL_BATCH = 1024  # paper Table 6 (ViT-B fine-tuning)


class CheckSkippedError(Exception):
    """The check does not apply on this machine."""


def skip(reason: str) -> dict:
    raise CheckSkippedError(reason)


def tiny_model(device: torch.device) -> nn.Module:
    from vicmae.model.vicmae import ModelConfig, ViCMAE

    torch.manual_seed(0)
    return ViCMAE(ModelConfig(**TINY)).to(device)


def views(device: torch.device, batch: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 2, 3, TINY["img_size"], TINY["img_size"], generator=g)
    return x.to(device)  # (B, 2, 3, H, W) normalised views


def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.loss_recon + 0.025 * out.loss_contrastive


def all_finite(model: nn.Module) -> bool:
    return all(
        p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters()
    ) and all(bool(torch.isfinite(p).all()) for p in model.parameters())


def check_bf16(device: torch.device) -> dict:
    model = tiny_model(device)
    dtypes: set[str] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: dtypes.add(str(o.dtype)))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = loss_of(model, views(device))
    loss.backward()
    for h in hooks:
        h.remove()
    ok = dtypes == {"torch.bfloat16"} and bool(torch.isfinite(loss)) and all_finite(model)
    return {"ok": ok, "linear_output_dtypes": sorted(dtypes), "loss": float(loss)}


def trainer_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The optimiser the trainer builds for ``model``, wherever the engine keeps its builder."""
    from vicmae.config import TrainConfig

    for module in ("vicmae.engine.param_groups", "vicmae.engine.loop", "vicmae.jobs.pretrain"):
        try:
            build = getattr(importlib.import_module(module), "build_optimizer", None)
        except ImportError:
            continue
        if build is None:
            continue
        if next(iter(inspect.signature(build).parameters)) == "model":
            return build(model, TrainConfig(), device)  # build_optimizer(model, cfg, device)
        return build(model, TrainConfig().optim, device)  # (params, optim config, device)
    raise ImportError(
        "no build_optimizer in vicmae.engine.param_groups, vicmae.engine.loop, vicmae.jobs.pretrain"
    )


def check_fused_adamw(device: torch.device) -> dict:
    if device.type != "cuda":
        raise CheckSkippedError("the trainer uses fused AdamW on CUDA only")
    model = tiny_model(device)
    opt = trainer_optimizer(model, device)
    for g in opt.param_groups:
        g["lr"] = 1e-3
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = loss_of(model, views(device))
    loss.backward()
    opt.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    fused = bool(opt.defaults.get("fused"))
    return {"ok": fused and changed > 0 and all_finite(model), "fused": fused,
            "tensors_changed": changed, "tensors": len(before)}  # fmt: skip


def check_sync_bn(device: torch.device) -> dict:
    if device.type != "cuda":
        raise CheckSkippedError("SyncBatchNorm needs CUDA (NCCL)")
    import torch.distributed as dist
    from torch.nn.modules._functions import SyncBatchNorm as SyncBNFunction

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(tiny_model(device))
        n_sync = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index or 0])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_of(ddp, views(device))
        loss.backward()

        # The multi-rank path, on one rank: statistics all-gathered over NCCL.
        torch.manual_seed(2)
        x = torch.randn(64, 32, device=device, requires_grad=True)
        w = torch.rand(32, device=device, requires_grad=True)
        b = torch.randn(32, device=device, requires_grad=True)
        rm, rv = torch.zeros(32, device=device), torch.ones(32, device=device)
        y = SyncBNFunction.apply(x, w, b, rm, rv, 1e-5, 0.1, dist.group.WORLD, 1)
        gy = torch.randn_like(y)
        grads = torch.autograd.grad(y, (x, w, b), gy)
        y_ref = functional.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
        grads_ref = torch.autograd.grad(y_ref, (x, w, b), gy)
        err = max(
            float((y - y_ref).abs().max()),
            *(float((g - r).abs().max()) for g, r in zip(grads, grads_ref, strict=True)),
        )
    finally:
        dist.destroy_process_group()
    ok = n_sync > 0 and bool(torch.isfinite(loss)) and all_finite(model) and err < 1e-3
    return {"ok": ok, "sync_bn_layers": n_sync, "sync_function_max_abs_err": err}


def check_compile(device: torch.device) -> dict:
    model = tiny_model(device)
    x = views(device)
    use_bf16 = device.type == "cuda"
    torch.manual_seed(3)  # same masks for both runs
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        eager = float(loss_of(model, x))
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    torch.manual_seed(3)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        loss = loss_of(compiled, x)
    loss.backward()
    seconds = time.perf_counter() - t0
    rel = abs(float(loss) - eager) / max(abs(eager), 1e-6)
    ok = bool(torch.isfinite(loss)) and all_finite(model) and rel < 0.05
    return {"ok": ok, "loss_eager": eager, "loss_compiled": float(loss),
            "rel_diff": rel, "first_step_seconds": seconds}  # fmt: skip


def check_finetune_accum(device: torch.device, beton: Path, val: Path, cpu: bool) -> dict:
    """One optimiser step of `vicmae train finetune` at the global batch, by accumulation."""
    batch, micro = (16, 4) if cpu else (FINETUNE_GLOBAL_BATCH, 128)
    arch = "vit_pico_patch8" if cpu else "vit_base_patch16"
    res = 64 if cpu else 224
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "vicmae_cli.train", "train", "finetune",
            "--beton", str(beton), "--val-beton", str(val), "--out", str(Path(tmp) / "ft"),
            f"model.arch={arch}", f"data.resolution={res}", f"optim.batch_size={batch}",
            f"optim.micro_batch={micro}", "optim.epochs=1", "run.max_steps=1",
            f"data.num_workers={2 if cpu else 16}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    return {"ok": proc.returncode == 0, "global_batch": batch, "micro_batch": micro,
            "accumulation": batch // micro, "arch": arch, "exit": proc.returncode,
            "output_tail": tail, "command": " ".join(cmd[1:])}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beton", type=Path, required=True, help="labelled .beton for fine-tuning")
    p.add_argument("--val-beton", type=Path, default=None, help="default: --beton")
    p.add_argument("--out", type=Path, required=True, help="JSON to write")
    p.add_argument("--cpu", action="store_true", help="run what a CPU can; SKIP the rest")
    p.add_argument("--only", default=None, help="comma-separated checks (debugging)")
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_paths: no CUDA GPU here (pass --cpu for the rehearsal)", file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.cpu else torch.device("cuda", 0)
    checks: dict[str, Callable[[], dict]] = {
        "bf16_autocast": lambda: check_bf16(device),
        "fused_adamw": lambda: check_fused_adamw(device),
        "sync_batchnorm": lambda: check_sync_bn(device),
        "compile": lambda: check_compile(device),
        "finetune_accum": lambda: check_finetune_accum(
            device, args.beton, args.val_beton or args.beton, args.cpu
        ),
    }
    if args.cpu:  # inductor on a 2-core CPU takes minutes; the GPU run compiles
        checks["compile"] = lambda: skip("compile is not rehearsed on the CPU")
    only = set(args.only.split(",")) if args.only else set(checks)
    results: dict[str, dict] = {}
    for name, fn in checks.items():
        if name not in only:
            continue
        t0 = time.perf_counter()
        try:
            detail = fn()
            status = "PASS" if detail.pop("ok") else "FAIL"
        except CheckSkippedError as exc:
            status, detail = "SKIP", {"reason": str(exc)}
        except Exception as exc:  # a check's failure is its result, not the script's end
            status = "FAIL"
            detail = {"error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc().splitlines()[-6:]}  # fmt: skip
        detail["seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = {"status": status, **detail}
        print(f"{name:16s} {status}  {json.dumps(detail, default=str)[:300]}", flush=True)
        report = {
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "checks": results,
        }
        write_text_atomic(args.out, json.dumps(report, indent=2, default=str) + "\n")
    return 0 if all(r["status"] != "FAIL" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
