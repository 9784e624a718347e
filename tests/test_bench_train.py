"""`make bench-train-gpu`'s smoke flags on the CPU: it times the engine's own step."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train_gpu.py"


def test_bench_train_gpu_smoke_times_the_engine_step(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_train_gpu", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "train.json"
    args = ["--allow-cpu", "--arch", "vit_pico_patch8", "--img-size", "32", "--batch", "4",
            "--accum", "2", "--steps", "2", "--warmup", "1", "--out", str(out), "--profile", "1",
            "model.decoder_dim=32", "model.decoder_depth=1", "model.decoder_heads=2",
            "model.projector_dims=[64,64,64]"]  # fmt: skip
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    assert result["step"].startswith("vicmae.engine.loop.train_step")
    assert result["samples_per_s"] > 0 and result["gflops_per_sample"] > 0
    # The profile of one step: the operators that took the most, and the share of each kind.
    prof = result["profile"]
    assert prof["steps"] == 1 and prof["timer"] == "cpu operators"
    assert abs(sum(prof["share_by_kind"].values()) - 1.0) < 1e-6
    assert prof["share_by_kind"].get("matmul", 0) > 0  # a ViT step is mostly linear layers
    assert prof["top"] and all(row["ms_per_step"] > 0 for row in prof["top"])
    assert isinstance(result["fused_attention"], bool)
