"""One GPU node, at most 8 minutes: the figures issues 10 and 18 ask for, from one run.

Run by ``scripts/gpu-check.sh`` (which first installs the offline bundle). Each section is a
subprocess under a hard cap (``gpu_runner.Check``); results are written under ``--results``
as each section ends (``gpu_check.json`` says which sections ran, how long, and how they
ended; every figure is in a ``gpu_*.json``); the summary table is printed last.

Sections, in priority order (``gpu_settings.SECTIONS``, issue 18's order):

1. ``loader``: ``bench_loader.py --scaling`` at 1, 16, 4 and 8 workers (the default loader on
   two-frame pretraining samples, its compiled work alone and the libwebp decode bound),
   then ``bench_loader.py --clips-only`` at the same counts (16-frame clips at stride 4,
   224: the clip loader, its compiled work and its bound) -> samples/s, clips/s, and 16
   workers over 1 for each (aim >= 12x) -> ``gpu_loader.json``;
2. MFU: ``train_b``: ``bench_train_gpu.py``, ViT-B/16 at 224, bf16, eager, at the largest
   batch of 256, 128, 64 that fits -> samples/s, FLOPs per step, MFU, peak memory, and a
   profile of 5 more steps (top kernels, shares of matmul / attention / norm / ...);
   ``train_b_compile``: the same with ``--compile`` at that batch; ``train_l``: ViT-L/16
   at one batch -> ``gpu_train.json``;
3. ``e2e``: ``vicmae train pretrain`` over the bundled .beton (joined with itself: 64-step
   epochs at batch 256) with 16 loader workers for three epochs -> samples/s and the
   data-wait share over the whole run, epoch starts included, next to the step alone of
   ``train_b`` -> ``gpu_e2e.json``;
4. ``finetune_video``: ``gpu_finetune.py --config k400_vitb``: ViT-B/16 inflated to 16 x
   224 x 224 clips (tubelet 2), bf16, the preset's loss and augmentation on the device,
   at the largest batch of 32, 16, 8 that fits -> samples/s, MFU (FLOPs from the formula
   in ``gpu_finetune.py``, checked against ``FlopCounterMode``), peak memory; then
   ``vicmae train finetune --config k400_vitb`` on the joined .beton at that batch with 16
   loader workers and RandAugment on 16 threads -> clips/s and data wait;
   ``finetune_image``: the same for ``places365_vitb`` (Table 6's image recipe) at the
   authors' per-device batch of 128 (or the largest that fits), end to end at Table 6's
   1,024 = 8 x 128 by accumulation -> ``gpu_finetune.json``;
5. ``paths``: ``gpu_paths.py``'s CUDA-only code paths (bf16 autocast, fused AdamW,
   SyncBatchNorm), PASS/FAIL each -> ``gpu_paths.json``.

A short budget loses the last sections first: the CUDA paths (all PASS on 2026-11-26),
then the image fine-tune, then the video fine-tune; the loader's scaling, the MFU figures
and the epoch-start stall come first. Not in the 8 minutes (each costs a minute or more):
PyAV's scaling, ``gpu_paths.py``'s compile check (``train_b_compile`` compiles) and its
``finetune_accum`` (``finetune_image`` accumulates).

    python benchmarks/gpu_check.py --beton bundle/data/clips.beton          # GPU node
    python benchmarks/gpu_check.py --cpu --results build/gpu-check-cpu      # rehearsal
    python benchmarks/gpu_check.py --list                                   # sections, caps
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from gpu_report import (
    E2E_HEADLINE,
    finetune_headline,
    loader_scaling,
    read_rows,
    summarise_e2e,
    summary_rows,
    write_json,
)
from gpu_runner import Check, ended, oom
from gpu_settings import CPU, GPU, SECTIONS, FinetuneRun, Settings

HERE = Path(__file__).resolve().parent
PY = sys.executable
# `vicmae-data` run by this interpreter (the console script may not be on PATH).
DATA_CLI = [PY, "-c", "from vicmae_cli.data import app; app()"]


# --- sections -------------------------------------------------------------------------


def bench_train(
    chk: Check, s: Settings, name: str, arch: str, batches: tuple[int, ...], extra: list[str]
) -> dict | None:
    """bench_train_gpu.py at the first batch of ``batches`` that fits; its JSON, or None."""
    t0 = time.monotonic()
    tried = []
    for batch in batches:
        out = chk.results / f".{name}_{batch}.json"
        cmd = [
            PY, str(HERE / "bench_train_gpu.py"), "--arch", arch, "--img-size", str(s.img_size),
            "--batch", str(batch), "--steps", str(s.steps), "--warmup", str(s.warmup),
            "--out", str(out), *s.allow_cpu, *extra,
        ]  # fmt: skip
        rc, output = chk.run(cmd, s.caps[name] - (time.monotonic() - t0))
        tried.append({"batch": batch, "status": ended(rc), "oom": oom(output)})
        if rc == 0 and out.is_file():
            result = json.loads(out.read_text())
            out.unlink()
            result["batches_tried"] = tried
            chk.section(name, "PASS", time.monotonic() - t0, f"batch {batch}")
            return result
        if rc is None or not oom(output):
            break  # only running out of memory is a reason to try a smaller batch
    chk.section(name, tried[-1]["status"], time.monotonic() - t0, f"tried {tried}")
    return None


def work_dir() -> Path:
    """Scratch space for the joined .beton and run checkpoints: RAM (/dev/shm) when roomy."""
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 16 * 2**30:
        return Path(tempfile.mkdtemp(prefix="vicmae-gpucheck-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="vicmae-gpucheck-"))


def join(chk: Check, s: Settings, beton: Path, work: Path) -> tuple[Path | None, float]:
    """The .beton joined with itself ``e2e_copies`` times (longer epochs); (path, seconds)."""
    t0 = time.monotonic()
    if s.e2e_copies <= 1:
        return beton, 0.0
    data = work / "joined.beton"
    cmd = [*DATA_CLI, "merge", *[str(beton)] * s.e2e_copies, "--out", str(data)]
    rc, _ = chk.run([*cmd, "--relabel", "keep"], s.caps["e2e"] / 3)
    return (data if rc == 0 else None), time.monotonic() - t0


def train_e2e(
    chk: Check, s: Settings, name: str, job: str, data: Path, work: Path, run_info: dict,
    steps: int, log_every: int, args: list[str], cap: float, step_only: dict | None,
    step_source: str,
) -> tuple[dict, int | None]:  # fmt: skip
    """``vicmae train JOB`` on ``data`` with the real loader (``s.e2e_workers`` workers) for
    ``steps`` optimiser steps of ``run_info["batch"]`` samples: samples/s and data wait by
    logging window (``summarise_e2e``), next to ``step_only`` (the step alone); (figures,
    exit code or None)."""
    run = work / f"run_{name}"
    cmd = [
        PY, "-m", "vicmae_cli.train", "train", job, "--beton", str(data), "--out", str(run),
        *args, f"data.num_workers={s.e2e_workers}", f"run.max_steps={steps}",
        f"run.log_every_steps={log_every}", "run.progress=false", "run.ckpt_every_steps=100000",
    ]  # fmt: skip
    rc, _ = chk.run(cmd, cap)
    rows = read_rows(run / "metrics.jsonl")
    shutil.rmtree(run, ignore_errors=True)  # checkpoints: GBs, in RAM
    result = summarise_e2e(rows, {**run_info, "workers": s.e2e_workers}, step_only, step_source)
    result.update(status=ended(rc), command=" ".join(cmd[1:]))
    return result, rc


def e2e(
    chk: Check, s: Settings, data: Path | None, join_s: float, batch: int, work: Path,
    step_only: dict | None,
) -> None:  # fmt: skip
    """``vicmae train pretrain`` with the real loader over three 64-step epochs."""
    if data is None:
        chk.section("e2e", "FAIL", join_s, "joining the .beton failed")
        return
    t0 = time.monotonic() - join_s
    args = [
        f"model.arch={s.arch_b}", f"model.img_size={s.img_size}",
        f"data.resolution={s.img_size}", f"optim.batch_size={batch}", *s.e2e_overrides,
    ]  # fmt: skip
    info = {"batch": batch, "arch": s.arch_b, "img_size": s.img_size}
    result, rc = train_e2e(
        chk, s, "e2e", "pretrain", data, work, info, s.e2e_steps, s.e2e_log_every, args,
        s.caps["e2e"] - (time.monotonic() - t0), step_only,
        "train_b (bench_train_gpu.py, eager, same batch)",
    )  # fmt: skip
    result.update(copies=s.e2e_copies, join_seconds=round(join_s, 1))
    write_json(chk.results / "gpu_e2e.json", result)
    chk.figures["e2e"] = {k: result.get(k) for k in E2E_HEADLINE}
    ok = rc == 0 and result.get("windows", 0) > 0
    chk.section("e2e", "PASS" if ok else ended(rc), time.monotonic() - t0)


def loader(chk: Check, s: Settings) -> None:
    """bench_loader.py twice, each once for every worker count (the videos made and
    converted once, the loader compiled once): two-frame pairs (``--scaling``), then 16 x 4
    clips (``--clips-only``). Each rewrites its JSON after every count, so a run cut short
    keeps the counts it finished (1 and 16 come first)."""
    t0 = time.monotonic()
    cap = s.caps["loader"]
    tmp = Path(tempfile.mkdtemp(prefix="vicmae-loader-"))
    bench = [PY, str(HERE / "bench_loader.py"), "--workers", ",".join(map(str, s.loader_workers))]
    pairs_cmd = [*bench, "--scaling", "--out", str(tmp / "pairs"), *s.loader_args]
    rc_pairs, _ = chk.run(pairs_cmd, cap * s.loader_pairs_share)
    clips_cmd = [*bench, "--clips-only", "--out", str(tmp / "clips"), *s.loader_clip_args]
    rc_clips, _ = chk.run(clips_cmd, cap - (time.monotonic() - t0))
    pairs, clips = (_json(tmp / k / "loader.json") for k in ("pairs", "clips"))
    shutil.rmtree(tmp, ignore_errors=True)
    w = s.loader_workers
    result = {
        "workers": list(w),
        **loader_scaling(pairs.get("by_workers", {}), "samples_per_s", w, ended(rc_pairs)),
        "clips": loader_scaling(
            clips.get("clips", {}).get("by_workers", {}), "clips_per_s", w, ended(rc_clips)
        ),
        "commands": [" ".join(c[1:]) for c in (pairs_cmd, clips_cmd)],
    }
    write_json(chk.results / "gpu_loader.json", result)
    chk.figures["loader"] = {
        "samples_per_s": result["samples_per_s"], "over_1": result["over_1"],
        "clips_per_s": result["clips"]["clips_per_s"], "clips_over_1": result["clips"]["over_1"],
    }  # fmt: skip
    status = next((ended(rc) for rc in (rc_pairs, rc_clips) if rc != 0), "PASS")
    chk.section("loader", status, time.monotonic() - t0)


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def finetune(
    chk: Check, s: Settings, name: str, ft: FinetuneRun, data: Path | None, work: Path,
    done: dict,
) -> None:  # fmt: skip
    """``gpu_finetune.py`` (the step alone, at the largest of ``ft.batches`` that fits),
    then ``vicmae train finetune --config PRESET`` end to end at that per-device batch;
    both into ``done[name]`` and ``gpu_finetune.json``."""
    t0 = time.monotonic()
    cap = s.caps[name]
    out = chk.results / f".{name}.json"
    cmd = [
        PY, str(HERE / "gpu_finetune.py"), "--config", ft.config, "--arch", s.arch_b,
        "--img-size", str(s.img_size), "--batches", ",".join(map(str, ft.batches)),
        "--steps", str(s.steps), "--warmup", str(s.warmup), "--out", str(out),
        *s.allow_cpu, *ft.step_args,
    ]  # fmt: skip
    rc, output = chk.run(cmd, cap * 0.45)  # the rest of the cap: end to end
    step = json.loads(out.read_text()) if rc == 0 and out.is_file() else None
    out.unlink(missing_ok=True)
    result: dict = {"config": ft.config, "step": step or {"status": ended(rc), "oom": oom(output)}}
    batch = step["batch"] if step else ft.batches[-1]
    total = ft.global_batch or batch
    rc_e2e: int | None = 1
    if data is None:
        result["e2e"] = {"status": "FAIL", "note": "joining the .beton failed"}
    else:
        args = [
            "--config", ft.config, f"model.arch={s.arch_b}", f"data.resolution={s.img_size}",
            f"optim.batch_size={total}", f"optim.micro_batch={batch}", *ft.overrides,
        ]  # fmt: skip
        info = {"batch": total, "micro_batch": batch, "accumulation": total // batch,
                "config": ft.config}  # fmt: skip
        result["e2e"], rc_e2e = train_e2e(
            chk, s, name, "finetune", data, work, info, ft.e2e_steps, ft.log_every, args,
            cap - (time.monotonic() - t0), step,
            f"{name} step alone (gpu_finetune.py, same per-device batch)",
        )  # fmt: skip
    done[name] = result
    write_json(chk.results / "gpu_finetune.json", done)
    chk.figures[name] = finetune_headline(result)
    ok = step is not None and rc_e2e == 0 and result["e2e"].get("windows", 0) > 0
    status = "PASS" if ok else (ended(rc) if step is None else ended(rc_e2e))
    chk.section(name, status, time.monotonic() - t0, f"batch {batch}")


def paths(chk: Check, s: Settings, beton: Path, cpu: bool) -> None:
    t0 = time.monotonic()
    out = chk.results / "gpu_paths.json"
    cmd = [PY, str(HERE / "gpu_paths.py"), "--beton", str(beton), "--out", str(out),
           "--only", ",".join(s.paths_checks)]  # fmt: skip
    if cpu:
        cmd.append("--cpu")
    rc, _ = chk.run(cmd, s.caps["paths"])
    if out.is_file():
        checks = json.loads(out.read_text()).get("checks", {})
        chk.figures["paths"] = {k: v.get("status") for k, v in checks.items()}
    chk.section("paths", ended(rc), time.monotonic() - t0)


def plan(s: Settings) -> str:
    """The sections in order with their caps, and the caps' sum against the budget."""
    lines = [f"{i}. {name:<16} cap {s.caps[name]:>5.0f} s" for i, name in
             enumerate(SECTIONS, 1)]  # fmt: skip
    total = sum(s.caps[name] for name in SECTIONS)
    lines.append(f"caps {total:.0f} s + reserve {s.reserve_s:.0f} s <= budget {s.budget_s:.0f} s:"
                 f" {'yes' if total + s.reserve_s <= s.budget_s else 'NO'}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beton", type=Path, help="the .beton to train and load from")
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--cpu", action="store_true", help="rehearsal: tiny settings on the CPU")
    p.add_argument("--started", type=float, default=None, help="epoch seconds the run began")
    p.add_argument("--only", default=None, help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--list", action="store_true", help="print the sections and caps; run nothing")
    args = p.parse_args(argv)
    s = CPU if args.cpu else GPU
    only = set(args.only.split(",")) if args.only else None
    if only and only - set(SECTIONS):
        print(f"gpu_check: error: unknown section(s) {','.join(sorted(only - set(SECTIONS)))}; "
              f"choose from {','.join(SECTIONS)}", file=sys.stderr)  # fmt: skip
        return 2
    if args.list:
        print(plan(s))
        return 0 if sum(s.caps[n] for n in SECTIONS) + s.reserve_s <= s.budget_s else 1
    if args.beton is None or not args.beton.is_file():
        print(f"gpu_check: error: {args.beton}: no such .beton", file=sys.stderr)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    spent = time.time() - args.started if args.started else 0.0
    log = args.results / "gpu_check.log"
    chk = Check(args.results, log, time.monotonic() + s.budget_s - spent, s.budget_s)
    chk.figures["settings"] = {"mode": "cpu" if args.cpu else "gpu", "sections": SECTIONS,
                               **asdict(s)}  # fmt: skip

    def want(name: str) -> bool:
        return only is None or name in only

    if want("loader"):
        loader(chk, s)
    train: dict[str, dict | None] = {}
    if want("train_b"):
        # 5 more steps under the profiler: where the step's time goes, for MFU work.
        train["train_b"] = bench_train(chk, s, "train_b", s.arch_b, s.batches, ["--profile", "5"])
    b = (train.get("train_b") or {}).get("batch", s.batches[-1])
    if want("train_b_compile"):
        if s.compile:
            train["train_b_compile"] = bench_train(
                chk, s, "train_b_compile", s.arch_b, (b,), ["--compile"]
            )
        else:
            chk.section("train_b_compile", "SKIP", 0.0, "compile is not rehearsed on the CPU")
    if want("train_l"):
        train["train_l"] = bench_train(chk, s, "train_l", s.arch_l, s.batch_l, [])
    write_json(args.results / "gpu_train.json", {k: v for k, v in train.items() if v})
    work = work_dir()
    try:
        fts = {"finetune_video": s.ft_video, "finetune_image": s.ft_image}
        joined, join_s = None, 0.0
        if want("e2e") or any(want(n) for n in fts):
            joined, join_s = join(chk, s, args.beton, work)
        if want("e2e"):
            e2e(chk, s, joined, join_s, b, work, train.get("train_b"))
        done: dict[str, dict] = {}
        for name, ft in fts.items():
            if want(name):
                finetune(chk, s, name, ft, joined, work, done)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if want("paths"):
        paths(chk, s, args.beton, args.cpu)

    rows = summary_rows(train, chk.figures, chk.sections)
    chk.figures["summary"] = dict(rows)
    chk.save()
    width = max(len(k) for k, _ in rows)
    print("\n" + "=" * 30 + " gpu-check summary " + "=" * 30)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    failed = [x["section"] for x in chk.sections if x["status"] not in ("PASS", "SKIP")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
