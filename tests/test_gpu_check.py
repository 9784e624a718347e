"""scripts/gpu-check.sh: its CPU rehearsal runs end to end, so the GPU script cannot rot.

The rehearsal is the GPU script itself with tiny settings (benchmarks/gpu_check.py's CPU
mode): the same sections, subprocesses, caps, JSON files and summary, on a .beton it makes
from synth clips. Nothing here needs a GPU or the offline bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_check import CPU  # noqa: E402
from gpu_report import summarise_e2e  # noqa: E402


def test_e2e_summary_skips_warmup_and_weighs_windows_by_time():
    rows = [  # batch 10: the first window (compilation) is left out
        {"step": 2, "epoch": 0.2, "samples_per_s": 1.0, "data_wait_pct": 90.0},
        {"step": 4, "epoch": 0.4, "samples_per_s": 100.0, "data_wait_pct": 1.0},  # 0.2 s
        {"step": 6, "epoch": 0.6, "samples_per_s": 100.0, "data_wait_pct": 1.0},  # 0.2 s
        {"step": 8, "epoch": 1.2, "samples_per_s": 25.0, "data_wait_pct": 40.0},  # 0.8 s
    ]
    out = summarise_e2e(rows, {"batch": 10}, {"samples_per_s": 200.0})
    assert out["windows"] == 3
    assert out["samples_per_s_median"] == 100.0
    assert out["samples_per_s_clean_median"] == 100.0  # the epoch-crossing window is out
    assert out["samples_per_s_overall"] == pytest.approx(60 / 1.2)
    assert out["data_wait_pct_overall"] == pytest.approx((0.2 + 0.2 + 0.8 * 40) / 1.2)
    assert out["e2e_over_step_only"] == pytest.approx(0.5)


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_section(tmp_path):
    results = tmp_path / "results"
    out = tmp_path / "out"  # stands in for the device runner's $OUT
    out.mkdir()
    proc = subprocess.run(
        ["bash", "scripts/gpu-check.sh", "--cpu", "--results", str(results),
         "--python", sys.executable],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
        env={**os.environ, "OUT": str(out)},
    )  # fmt: skip
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    check = json.loads((results / "gpu_check.json").read_text())
    status = {s["section"]: s["status"] for s in check["sections"]}
    assert status == {
        "train_b": "PASS", "train_l": "PASS", "e2e": "PASS", "paths": "PASS",
        "train_b_compile": "SKIP", "loader": "PASS",
    }, log  # fmt: skip

    train = json.loads((results / "gpu_train.json").read_text())
    assert train["train_b"]["samples_per_s"] > 0 and train["train_b"]["batch"] == CPU.batches[0]
    assert train["train_b"]["profile"]["steps"] == 5  # where the step's time goes
    assert train["train_l"]["arch"] == CPU.arch_l

    e2e = json.loads((results / "gpu_e2e.json").read_text())
    assert e2e["steps"] == CPU.e2e_steps and e2e["windows"] >= 2
    assert e2e["samples_per_s_median"] > 0 and 0 <= e2e["data_wait_pct_overall"] <= 100
    assert e2e["step_only_samples_per_s"] == train["train_b"]["samples_per_s"]

    loader = json.loads((results / "gpu_loader.json").read_text())
    ours = loader["samples_per_s"]["vicmae (ffcv + libwebp)"]
    assert set(ours) == {str(w) for w in CPU.loader_workers} and min(ours.values()) > 0
    assert set(loader["samples_per_s"]["bound: libwebp 2 full decodes"]) == set(ours)

    checks = json.loads((results / "gpu_paths.json").read_text())["checks"]
    assert checks["bf16_autocast"]["status"] == "PASS"
    for name in ("fused_adamw", "sync_batchnorm", "compile"):
        assert checks[name]["status"] == "SKIP", name  # CUDA only
    ft = checks["finetune_accum"]  # one step at the global batch, in micro-batches
    assert ft["status"] == "PASS" and ft["accumulation"] == 4, ft  # 16 = 4 forwards of 4
    assert proc.returncode == 0, log

    # The summary table comes last; the results and the log are copied to $OUT.
    assert "gpu-check summary" in proc.stdout.split("[gpu-check] train_b")[-1]
    copied = {p.name for p in out.iterdir()}
    assert {"gpu_check.json", "gpu_e2e.json", "gpu_check.log"} <= copied
    assert len(copied) <= 8  # the device runner brings back at most 8 files
