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

from gpu_check import main as gpu_check  # noqa: E402
from gpu_report import loader_scaling, summarise_e2e  # noqa: E402
from gpu_settings import CPU, GPU, SECTIONS  # noqa: E402


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


def test_gpu_sections_fit_the_budget_in_issue_18s_order(capsys):
    # The order is the priority: a short budget loses the last sections.
    assert SECTIONS[0] == "loader" and SECTIONS[-1] == "paths"
    assert SECTIONS.index("train_b") < SECTIONS.index("e2e") < SECTIONS.index("finetune_video")
    assert SECTIONS.index("finetune_video") < SECTIONS.index("finetune_image")
    for s in (GPU, CPU):
        assert set(s.caps) == set(SECTIONS)
        assert sum(s.caps.values()) + s.reserve_s <= s.budget_s
    assert GPU.budget_s <= 470  # 8 minutes on the node, with the bundle's install before
    assert {1, 4, 8, 16} == set(GPU.loader_workers) and GPU.loader_workers[:2] == (1, 16)
    assert GPU.ft_video.config == "k400_vitb" and GPU.ft_video.batches == (32, 16, 8)
    assert GPU.ft_image.global_batch == 1024 and GPU.ft_image.batches[0] == 128

    # The GPU mode's plan, as the node will run it; nothing needs a GPU to print it.
    assert gpu_check(["--list"]) == 0
    plan = capsys.readouterr().out
    assert [line.split()[1] for line in plan.splitlines()[:-1]] == list(SECTIONS)
    assert plan.splitlines()[-1].endswith("yes")
    assert gpu_check(["--list", "--only", "loader,finetune_video"]) == 0
    assert gpu_check(["--only", "loader,finetune"]) == 2  # a typo stops the run before it starts
    assert "unknown section(s) finetune" in capsys.readouterr().err
    assert gpu_check(["--only", "loader"]) == 2  # and so does a missing .beton
    assert "no such .beton" in capsys.readouterr().err


def test_loader_scaling_is_each_count_over_one_worker():
    by_workers = {  # bench_loader.py's by_workers, counts in the order they ran
        "1": {"samples_per_s": {"vicmae (ffcv + libwebp)": 100.0, "bound: x": 120.0}},
        "16": {"samples_per_s": {"vicmae (ffcv + libwebp)": 1300.0, "bound: x": 1500.0}},
        "4": {"samples_per_s": {"vicmae (ffcv + libwebp)": 390.0}},
    }
    out = loader_scaling(by_workers, "samples_per_s", (1, 16, 4, 8), "TIMEOUT")
    assert out["over_1"] == {"1": 1.0, "4": 3.9, "16": 13.0}
    assert out["aim_16_over_1_at_least_12"] is True
    assert out["samples_per_s"]["bound: x"] == {"1": 120.0, "16": 1500.0}
    assert out["runs"]["8"] == {"status": "TIMEOUT"}  # the count the cap cut off
    clips = {"1": {"clips_per_s": {"vicmae clips 16x4": 30.0}},
             "16": {"clips_per_s": {"vicmae clips 16x4": 300.0}}}  # fmt: skip
    out = loader_scaling(clips, "clips_per_s", (1, 16), "PASS")
    assert out["over_1"]["16"] == 10.0 and out["aim_16_over_1_at_least_12"] is False
    assert loader_scaling({}, "clips_per_s", (1, 16), "FAIL")["over_1"] == {}


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
    assert list(status) == list(SECTIONS), log  # in priority order
    assert status == {
        "loader": "PASS", "train_b": "PASS", "train_b_compile": "SKIP", "train_l": "PASS",
        "e2e": "PASS", "finetune_video": "PASS", "finetune_image": "PASS", "paths": "PASS",
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
    counts = {str(w) for w in CPU.loader_workers}
    for rates, ours in (
        (loader, "vicmae (ffcv + libwebp)"),
        (loader["clips"], "vicmae clips 16x4"),
    ):
        table = rates.get("samples_per_s") or rates["clips_per_s"]
        assert set(table[ours]) == counts and min(table[ours].values()) > 0
        assert set(rates["over_1"]) == counts and rates["over_1"]["1"] == 1.0
    assert set(loader["samples_per_s"]["bound: libwebp 2 full decodes"]) == counts
    assert set(loader["clips"]["clips_per_s"]["bound: libwebp 16 full decodes"]) == counts

    ft = json.loads((results / "gpu_finetune.json").read_text())
    video, image = ft["finetune_video"], ft["finetune_image"]
    assert video["step"]["kind"] == "clips" and video["step"]["frames"] == 4
    assert image["step"]["kind"] == "images" and image["step"]["batch"] == 4
    for part in (video, image):
        check_ = part["step"]["flops_check"]  # the formula against FlopCounterMode
        assert check_["counted_forward_gflops"] == pytest.approx(check_["formula_forward_gflops"])
        assert part["step"]["samples_per_s"] > 0
        assert part["e2e"]["status"] == "PASS" and part["e2e"]["windows"] >= 2
        assert 0 <= part["e2e"]["data_wait_pct_overall"] <= 100
        assert part["e2e"]["step_only_samples_per_s"] == part["step"]["samples_per_s"]
    assert video["e2e"]["steps"] == CPU.ft_video.e2e_steps
    # Table 6's batch by accumulation, as on the GPU (1,024 = 8 x 128): 16 = 4 forwards of 4.
    assert image["e2e"]["batch"] == 16 and image["e2e"]["accumulation"] == 4

    checks = json.loads((results / "gpu_paths.json").read_text())["checks"]
    assert set(checks) == set(CPU.paths_checks)
    assert checks["bf16_autocast"]["status"] == "PASS"
    for name in ("fused_adamw", "sync_batchnorm"):
        assert checks[name]["status"] == "SKIP", name  # CUDA only
    assert proc.returncode == 0, log

    # The summary table comes last; the results and the log are copied to $OUT.
    summary = proc.stdout.split("[gpu-check] paths")[-1]
    assert "gpu-check summary" in summary and "finetune_video: end to end" in summary
    copied = {p.name for p in out.iterdir()}
    assert {"gpu_check.json", "gpu_e2e.json", "gpu_finetune.json", "gpu_check.log"} <= copied
    assert len(copied) <= 8  # the device runner brings back at most 8 files
