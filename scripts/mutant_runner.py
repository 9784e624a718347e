"""Testing mutants fast: one process per group imports the heavy libraries, then forks a
child per mutant that imports the mutated module from memory and runs the group's tests.

Used by ``scripts/mutate.py`` (see its docstring). A child exits with pytest's code; the
group's unmutated run is traced first, so that mutants on statements no test runs are
not run at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mutants import ROOT, module_name, statement_ran

MAIN = Path(__file__).with_name("mutate.py")
# Imported once per group, before the fork: what makes a test process slow to start.
PRELOAD = ("numpy", "torch", "numba", "ffcv", "timm", "PIL.Image", "av", "typer", "rich",
           "yaml", "torch.utils.tensorboard", "pytest")  # fmt: skip


# The same finder for Python processes a test starts (mp.spawn, torchrun, a CLI in a
# subprocess): the runner puts this file's folder first on their PYTHONPATH.
SITECUSTOMIZE = """
import importlib.util, json, os, sys

class _FromMemory:
    def __init__(self, name, path, source):
        self.name, self.path, self.source = name, path, source

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        return importlib.util.spec_from_file_location(fullname, self.path, loader=self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(compile(self.source, self.path, "exec"), module.__dict__)

if os.environ.get("VICMAE_MUTANT"):
    with open(os.environ["VICMAE_MUTANT"]) as f:
        sys.meta_path.insert(0, _FromMemory(**json.load(f)))
    # cosmic-ray's ExceptionReplacer writes `except CosmicRayTestingException:`, a name its
    # own runner defines: an exception nothing raises, so the clause catches nothing (left
    # undefined, an exception reaching the clause would become a NameError instead).
    import builtins
    builtins.CosmicRayTestingException = type("CosmicRayTestingException", (Exception,), {})

# The unmutated run records which lines of the mutated files run, in every process.
_hits = {}


def _dump():
    out = os.path.join(os.environ["VICMAE_TRACE_DIR"], f"{os.getpid()}.json")
    with open(out, "w") as f:
        json.dump({k: sorted(v) for k, v in _hits.items()}, f)


if os.environ.get("VICMAE_TRACE_DIR"):
    import atexit, threading

    _hits.update({p: set() for p in os.environ["VICMAE_TRACE_FILES"].split(os.pathsep)})

    def _local(frame, event, arg):
        if event == "line":
            _hits[frame.f_code.co_filename].add(frame.f_lineno)
        return _local

    def _global(frame, event, arg):
        if frame.f_code.co_filename in _hits:
            _hits[frame.f_code.co_filename].add(frame.f_lineno)
            return _local
        return None

    sys.settrace(_global)
    threading.settrace(_global)
    atexit.register(_dump)
"""


def _install_mutant(job: dict, log_path: str) -> None:
    """The mutated module in front of its file, in this process and in any it starts."""
    folder = Path(log_path).parent
    spec = {"name": module_name(job["file"]), "path": str(ROOT / job["file"]),
            "source": job["source"]}  # fmt: skip
    mutant_file = Path(log_path).with_suffix(".mutant.json")
    mutant_file.write_text(json.dumps(spec))
    os.environ["VICMAE_MUTANT"] = str(mutant_file)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(folder / "site"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    exec(SITECUSTOMIZE, {"__name__": "sitecustomize"})  # and in this process, now


def _start_trace(job: dict, log_path: str, site: dict) -> None:
    """Record the lines of ``job["trace"]`` files that run, here and in started processes."""
    Path(job["trace_dir"]).mkdir(parents=True, exist_ok=True)
    os.environ["VICMAE_TRACE_DIR"] = job["trace_dir"]
    os.environ["VICMAE_TRACE_FILES"] = os.pathsep.join(job["trace"])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(Path(log_path).parent / "site"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    exec(SITECUSTOMIZE, site)


def _child(job: dict, tests: list[str], log_path: str) -> None:
    """In the forked child: the mutant in front of the file, the tests, exit with pytest's code."""
    code = 98
    try:
        os.setsid()  # its own process group: a timeout kills what it started too
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        site: dict = {}
        if job.get("source") is not None:
            _install_mutant(job, log_path)
        elif job.get("trace"):
            _start_trace(job, log_path, site)
        import pytest

        args = [
            *tests,
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            f"--timeout={job.get('test_timeout', 0)}",
        ]  # a hung test fails (pytest-timeout)
        code = int(pytest.main(args))
        if "_dump" in site:
            site["_dump"]()
    except BaseException:  # any failure in the child is the mutant's
        import traceback

        traceback.print_exc()
        code = 99
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def worker(jobs_file: str) -> None:
    """One group: import the heavy libraries once, then fork a child per mutant."""
    spec = json.loads(Path(jobs_file).read_text())
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT / "tests"))
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    tests, jobs, logs = spec["tests"], spec["jobs"], Path(spec["logs"])
    (logs / "site").mkdir(parents=True, exist_ok=True)
    (logs / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    pending = list(enumerate(spec["mutants"]))
    running: dict[int, tuple[int, float]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            i, job = pending.pop(0)
            log_path = str(logs / f"{i}.log")
            pid = os.fork()
            if pid == 0:
                _child(job, tests, log_path)
            running[pid] = (i, time.monotonic())
        time.sleep(0.05)
        for pid, (i, t0) in list(running.items()):
            done, wstatus = os.waitpid(pid, os.WNOHANG)
            elapsed = time.monotonic() - t0
            if done == 0 and elapsed < spec["timeout"]:
                continue
            if done == 0:  # past its time: the whole process group goes
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                rc = None
            else:
                rc = os.waitstatus_to_exitcode(wstatus)
            del running[pid]
            print(json.dumps({"index": i, "rc": rc, "seconds": round(elapsed, 2)}), flush=True)


def run_group(group: dict, found: list[dict], run: dict, logs: Path) -> tuple[float, list]:
    """(seconds of the unmutated tests, one result per mutant) for one group."""
    logs.mkdir(parents=True, exist_ok=True)
    jobs_file = logs / "jobs.json"
    env = {**os.environ, **group.get("env", {})}
    if run["jobs"] > 1:  # a thread each: the children share the cores
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}

    def call(mutant_list: list[dict], jobs: int, timeout: float) -> list[dict]:
        spec = {"tests": group["tests"], "jobs": jobs, "timeout": timeout, "logs": str(logs),
                "mutants": mutant_list}  # fmt: skip
        jobs_file.write_text(json.dumps(spec))
        cmd = [sys.executable, str(MAIN), "--worker", str(jobs_file)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        results = []
        assert proc.stdout is not None
        for line in proc.stdout:
            r = json.loads(line)
            results.append(r)
            if mutant_list[r["index"]].get("source") is not None:
                _progress(group["name"], mutant_list[r["index"]], r, len(results), len(found))
        if proc.wait() != 0:
            raise SystemExit(f"error: the worker for group {group['name']} failed")
        return sorted(results, key=lambda r: r["index"])

    if not found:  # nothing to test (a --survivors run with none left)
        return 0.0, []
    files = sorted({str(ROOT / m) for m in group["modules"]})
    trace_dir = logs / "trace"
    baseline = {"file": None, "source": None, "trace": files, "trace_dir": str(trace_dir)}
    (base,) = call([baseline], 1, 3600)
    (logs / "0.log").rename(logs / "unmutated.log")
    if base["rc"] != 0:
        tail = (logs / "unmutated.log").read_text()[-3000:]
        raise SystemExit(f"error: group {group['name']}: the unmutated tests fail:\n{tail}")
    ran: dict[str, set[int]] = {f: set() for f in files}
    for dump in trace_dir.glob("*.json"):
        for f, lines in json.loads(dump.read_text()).items():
            ran[f].update(lines)
    # A mutant on a statement no test runs survives whatever the tests assert: not run.
    reached = [statement_ran(m, ran[str(ROOT / m["file"])]) for m in found]
    todo = [m | {"test_timeout": run["test_timeout_s"]} for m, r in zip(found, reached, strict=True)
            if r]  # fmt: skip
    timeout = max(run["timeout_min_s"], run["timeout_factor"] * base["seconds"])
    results = iter(call(todo, run["jobs"], timeout) if todo else [])
    out = [next(results) if r else {"rc": 0, "seconds": 0.0, "unreached": True} for r in reached]
    return base["seconds"], out


def _progress(group: str, m: dict, r: dict, n: int, total: int) -> None:
    mark = {"killed": "k", "timeout": "T", "survived": "S", "error": "E"}[status(r["rc"])]
    where = f"{m['file']}:{m['line']}"
    print(f"  [{group} {n}/{total}] {mark} {r['seconds']:6.1f}s {where} {m['operator'][5:]}",
          flush=True)  # fmt: skip


def status(rc: int | None) -> str:
    if rc is None:
        return "timeout"
    if rc in (1, 2, 3, 4):  # tests failed, or a test module no longer imports (a mutant
        return "killed"  # that does not compile: pytest reports it as 2, 3 or 4)
    if rc < 0:  # the tests' process died of a signal (a mutated plan or signature makes the
        return "killed"  # kernels call a bad address: SIGSEGV); a timeout is rc None, above
    if rc == 0:
        return "survived"
    return "error"  # no tests collected, or the runner's own failure: not the tests' verdict
