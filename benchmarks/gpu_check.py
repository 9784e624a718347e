"""One GPU node, at most 8 minutes: the figures issue 10 asks for, from one run.

Run by ``scripts/gpu-check.sh`` (which first installs the offline bundle). Every section is
a subprocess under a hard time cap, started in its own process group and killed whole when
the cap runs out, so one failure or hang never stops the rest. Results are written under
``--results`` as each section ends (``gpu_check.json`` says which sections ran, how long,
and how they ended); the summary table is printed last.

Sections, in order (most important first, so a short budget loses the least):

1. ``train_b``: ``benchmarks/bench_train_gpu.py``, ViT-B/16 at 224, bf16, eager, at the
   largest batch of 256, 128, 64 that fits -> samples/s, FLOPs per step, MFU, peak memory,
   and a profile of 5 more steps (top kernels, share of matmul / attention / norm / ...);
2. ``train_l``: the same for ViT-L/16 at one batch;
3. ``e2e``: ``vicmae train pretrain`` over the bundled .beton (joined with itself so that
   an epoch lasts several logging windows) with 16 loader workers, ViT-B/16 at the batch of
   section 1 -> samples/s and data-wait share from its ``metrics.jsonl``, next to the
   step-only samples/s of section 1;
4. ``paths``: ``benchmarks/gpu_paths.py``, the CUDA-only code paths, PASS/FAIL each;
5. ``train_b_compile``: section 1 with ``--compile`` at the same batch;
6. ``loader``: ``benchmarks/bench_loader.py`` at 1, 4, 8 and 16 workers.

    python benchmarks/gpu_check.py --beton bundle/data/clips.beton          # GPU node
    python benchmarks/gpu_check.py --cpu --results build/gpu-check-cpu      # rehearsal
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpu_report import E2E_HEADLINE, read_rows, summarise_e2e, summary_rows, write_json

HERE = Path(__file__).resolve().parent
PY = sys.executable
# `vicmae-data` run by this interpreter (the console script may not be on PATH).
DATA_CLI = [PY, "-c", "from vicmae_cli.data import app; app()"]


@dataclass(frozen=True)
class Settings:
    """Sizes and time caps (seconds) of one mode."""

    arch_b: str = "vit_base_patch16"
    arch_l: str = "vit_large_patch16"
    img_size: int = 224
    batches: tuple[int, ...] = (256, 128, 64)  # the largest that fits is kept
    batch_l: tuple[int, ...] = (128, 64)
    steps: int = 30
    warmup: int = 10
    e2e_steps: int = 200
    e2e_workers: int = 16
    # The .beton joined with itself: epochs of 32 x 512 samples, 64 steps at batch 256, so
    # that per-epoch costs (loader restart, a ViT-B checkpoint) weigh as on a real dataset.
    e2e_copies: int = 32
    e2e_log_every: int = 10
    e2e_overrides: tuple[str, ...] = ()
    loader_workers: tuple[int, ...] = (1, 4, 8, 16)
    loader_args: tuple[str, ...] = tuple(
        "--num-videos 32 --seconds 2 --repeat 24 --rounds 1 --batch-size 32".split()
    )
    compile: bool = True
    budget_s: float = 470.0  # all sections together, from the script's start
    caps: dict[str, float] = field(
        default_factory=lambda: dict(
            train_b=75, train_l=45, e2e=120, paths=90, train_b_compile=150, loader=110
        )
    )
    allow_cpu: tuple[str, ...] = ()


GPU = Settings()
CPU = Settings(
    arch_b="vit_pico_patch8",
    arch_l="vit_pico_patch8",  # the same code path as ViT-L, at the size of a CPU
    img_size=32,
    batches=(8,),
    batch_l=(4,),
    steps=1,
    warmup=1,
    e2e_steps=8,
    e2e_workers=2,
    e2e_copies=2,
    e2e_log_every=2,
    e2e_overrides=(
        "model.decoder_dim=64",
        "model.decoder_depth=1",
        "model.decoder_heads=2",
        "model.projector_dims=[128,128,128]",
    ),
    loader_workers=(1, 2),
    loader_args=tuple("--num-videos 4 --seconds 1 --repeat 4 --rounds 1 --batch-size 8".split()),
    compile=False,  # inductor on a 2-core CPU takes minutes; the GPU run compiles
    # ~2 minutes in all on 2 idle cores; the caps are 4x that, for machines shared with
    # other work (a cap only bounds a hang here: the rehearsal checks plumbing, not speed).
    budget_s=900.0,
    caps=dict(train_b=150, train_l=150, e2e=200, paths=200, train_b_compile=60, loader=300),
    allow_cpu=("--allow-cpu",),
)


class Check:
    """Runs sections under caps within one overall deadline and records how each ended."""

    def __init__(self, results: Path, log: Path, deadline: float, budget: float) -> None:
        self.results, self.log, self.deadline, self.budget = results, log, deadline, budget
        self.sections: list[dict] = []
        self.figures: dict[str, dict] = {}

    def run(self, cmd: list[str], cap: float, env: dict | None = None) -> tuple[int | None, str]:
        """Run ``cmd`` for at most ``cap`` s (its whole process group); (exit code, output).

        The exit code is None when the cap ran out.
        """
        cap = min(cap, self.deadline - time.monotonic())
        with open(self.log, "a") as f:
            at = time.monotonic() - (self.deadline - self.budget)
            f.write(f"\n[+{at:.0f} s] $ {' '.join(cmd)}   (cap {cap:.0f} s)\n")
            f.flush()
            start = f.tell()
            if cap <= 1:
                f.write("not started: no time left\n")
                return None, ""
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **(env or {})},
            )  # fmt: skip
            try:
                rc: int | None = proc.wait(timeout=cap)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                rc = None
        with open(self.log) as f:
            f.seek(start)
            out = f.read()
        if rc is None:
            with open(self.log, "a") as f:
                f.write(f"\n[killed after {cap:.0f} s]\n")
        return rc, out

    def section(self, name: str, status: str, seconds: float, note: str = "") -> None:
        self.sections.append(
            {"section": name, "status": status, "seconds": round(seconds, 1), "note": note}
        )
        self.save()
        print(f"[gpu-check] {name}: {status} in {seconds:.0f} s {note}", flush=True)

    def save(self) -> None:
        write_json(self.results / "gpu_check.json", {"sections": self.sections, **self.figures})
        # The device runner brings back what is in $OUT, even if the run is cut short.
        out = os.environ.get("OUT")
        if out and Path(out).is_dir():
            for f in [*self.results.glob("gpu_*.json"), self.log]:
                shutil.copy(f, Path(out) / f.name)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def ended(rc: int | None) -> str:
    return "TIMEOUT" if rc is None else ("PASS" if rc == 0 else "FAIL")


def oom(output: str) -> bool:
    return "out of memory" in output.lower() or "OutOfMemoryError" in output


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


def e2e(
    chk: Check, s: Settings, data: Path | None, join_s: float, batch: int, work: Path,
    step_only: dict | None,
) -> None:  # fmt: skip
    """``vicmae train pretrain`` with the real loader; samples/s and data wait by window."""
    if data is None:
        chk.section("e2e", "FAIL", join_s, "joining the .beton failed")
        return
    t0 = time.monotonic() - join_s
    run = work / "run"
    cmd = [
        PY, "-m", "vicmae_cli.train", "train", "pretrain", "--beton", str(data),
        "--out", str(run),
        f"model.arch={s.arch_b}", f"model.img_size={s.img_size}",
        f"data.resolution={s.img_size}", f"data.num_workers={s.e2e_workers}",
        f"optim.batch_size={batch}", f"run.max_steps={s.e2e_steps}",
        f"run.log_every_steps={s.e2e_log_every}", "run.progress=false",
        "run.ckpt_every_steps=100000", *s.e2e_overrides,
    ]  # fmt: skip
    rc, _ = chk.run(cmd, s.caps["e2e"] - (time.monotonic() - t0))
    rows = read_rows(run / "metrics.jsonl")
    shutil.rmtree(run, ignore_errors=True)  # checkpoints: GBs, in RAM
    settings = {"batch": batch, "arch": s.arch_b, "img_size": s.img_size}
    result = summarise_e2e(rows, {**settings, "workers": s.e2e_workers}, step_only)
    result.update(
        copies=s.e2e_copies, join_seconds=round(join_s, 1), status=ended(rc),
        command=" ".join(cmd[1:]),
    )  # fmt: skip
    write_json(chk.results / "gpu_e2e.json", result)
    chk.figures["e2e"] = {k: result.get(k) for k in E2E_HEADLINE}
    ok = rc == 0 and result.get("windows", 0) > 0
    chk.section("e2e", "PASS" if ok else ended(rc), time.monotonic() - t0)


def loader(chk: Check, s: Settings) -> None:
    """bench_loader.py once for every worker count (the clips made and converted once, the
    loader compiled once); it rewrites its JSON after each count, so a run cut short keeps
    the counts it finished. Last section: it may use whatever the budget has left."""
    t0 = time.monotonic()
    cap = max(s.caps["loader"], chk.deadline - t0 - 5)
    out = Path(tempfile.mkdtemp(prefix="vicmae-loader-"))
    workers = ",".join(str(w) for w in s.loader_workers)
    # --scaling: the default loader, PyAV and the decode bound at each count.
    cmd = [PY, str(HERE / "bench_loader.py"), "--workers", workers, "--scaling", "--out",
           str(out), *s.loader_args]  # fmt: skip
    rc, _ = chk.run(cmd, cap)
    done = json.loads((out / "loader.json").read_text()) if (out / "loader.json").is_file() else {}
    shutil.rmtree(out, ignore_errors=True)
    by_workers = done.get("by_workers", {})
    runs = {str(w): by_workers.get(str(w), {"status": ended(rc)}) for w in s.loader_workers}
    status = ended(rc)
    table = {}
    for w, r in runs.items():
        for name, v in (r.get("samples_per_s") or {}).items():
            table.setdefault(name, {})[w] = v
    one = table.get("vicmae (ffcv + libwebp)", {})
    result = {"workers": list(s.loader_workers), "samples_per_s": table, "runs": runs}
    if "1" in one and "16" in one:
        result["scaling_16_over_1"] = one["16"] / one["1"]
    write_json(chk.results / "gpu_loader.json", result)
    chk.figures["loader"] = {"samples_per_s": table}
    chk.section("loader", status, time.monotonic() - t0)


def paths(chk: Check, s: Settings, train: Path, val: Path, cpu: bool) -> None:
    t0 = time.monotonic()
    out = chk.results / "gpu_paths.json"
    cmd = [PY, str(HERE / "gpu_paths.py"), "--beton", str(train), "--val-beton", str(val),
           "--out", str(out)]  # fmt: skip
    if cpu:
        cmd.append("--cpu")
    rc, _ = chk.run(cmd, s.caps["paths"])
    if out.is_file():
        checks = json.loads(out.read_text()).get("checks", {})
        chk.figures["paths"] = {k: v.get("status") for k, v in checks.items()}
    chk.section("paths", ended(rc), time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beton", type=Path, required=True, help="the .beton to train and load from")
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--cpu", action="store_true", help="rehearsal: tiny settings on the CPU")
    p.add_argument("--started", type=float, default=None, help="epoch seconds the run began")
    p.add_argument("--only", default=None, help="comma-separated sections to run (debugging)")
    args = p.parse_args(argv)
    s = CPU if args.cpu else GPU
    if not args.beton.is_file():
        print(f"gpu_check: error: {args.beton}: no such .beton", file=sys.stderr)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    spent = time.time() - args.started if args.started else 0.0
    log = args.results / "gpu_check.log"
    chk = Check(args.results, log, time.monotonic() + s.budget_s - spent, s.budget_s)
    chk.figures["settings"] = {"mode": "cpu" if args.cpu else "gpu", **asdict(s)}
    only = set(args.only.split(",")) if args.only else None

    def want(name: str) -> bool:
        return only is None or name in only

    train: dict[str, dict | None] = {}
    if want("train_b"):
        # 5 more steps under the profiler: where the step's time goes, for MFU work.
        train["train_b"] = bench_train(chk, s, "train_b", s.arch_b, s.batches, ["--profile", "5"])
    if want("train_l"):
        train["train_l"] = bench_train(chk, s, "train_l", s.arch_l, s.batch_l, [])
    b = (train.get("train_b") or {}).get("batch", s.batches[-1])
    work = work_dir()
    try:
        joined, join_s = (
            join(chk, s, args.beton, work) if want("e2e") or want("paths") else (None, 0)
        )
        if want("e2e"):
            e2e(chk, s, joined, join_s, b, work, train.get("train_b"))
        if want("paths"):
            paths(chk, s, joined or args.beton, args.beton, args.cpu)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if want("train_b_compile"):
        if s.compile:
            train["train_b_compile"] = bench_train(
                chk, s, "train_b_compile", s.arch_b, (b,), ["--compile"]
            )
        else:
            chk.section("train_b_compile", "SKIP", 0.0, "compile is not rehearsed on the CPU")
    write_json(args.results / "gpu_train.json", {k: v for k, v in train.items() if v})
    if want("loader"):
        loader(chk, s)

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
