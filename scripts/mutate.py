"""`make mutate`: how many plausible single bugs in the numerical core the test suite catches.

    python scripts/mutate.py                      # every group of scripts/mutation.toml
    python scripts/mutate.py --group loop --limit 10   # a few mutants: check the harness

cosmic-ray (8.x) makes the mutants: its operators, their positions in each module and the
mutated source (parso, formatting kept). They are tested by a runner of our own, because
cosmic-ray runs each mutant as a new test process that writes the mutant to disk: here
importing torch, ffcv and timm takes 5-30 s a process, more than most mutants' tests. The
runner starts one process per group with those libraries imported, forks it per mutant
(``run.jobs`` at a time), and the child imports the mutated module from memory (an import
hook in front of the file), then runs the group's tests with ``pytest -x``. Nothing on
disk changes, so mutants run side by side and numba's cache is never fed a mutant.

A mutant is killed when the tests fail (or do not finish within the group's timeout),
survived when they pass. ``[[equivalent]]`` entries of the config are survivors that no
test can kill; the score is killed / (mutants - equivalent). Writes
``benchmarks/results/mutation.json`` (every survivor with file:line and the mutation) and
prints a table. Not part of ``make test``: about 30 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "scripts" / "mutation.toml"
RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"
# Imported once per group, before the fork: what makes a test process slow to start.
PRELOAD = ("numpy", "torch", "numba", "ffcv", "timm", "PIL.Image", "av", "typer", "rich",
           "yaml", "torch.utils.tensorboard", "pytest")  # fmt: skip


# ----------------------------------------------------------------------------- mutants


def module_name(path: str) -> str:
    """``vicmae/engine/loop.py`` -> ``vicmae.engine.loop`` (``cli/`` installs as vicmae_cli)."""
    parts = list(Path(path).with_suffix("").parts)
    if parts[0] == "cli":
        parts[0] = "vicmae_cli"
    return ".".join(parts)


def quiet_spans(source: str, calls: list[str]) -> list[tuple[tuple, tuple]]:
    """((line, col), (end line, end col)) of code whose mutants change no behaviour a test
    can see: the arguments of ``calls`` (log.info(...), warnings.warn(...)) and of a raised
    exception's constructor (what a message says), annotations (never evaluated here: every
    module has ``from __future__ import annotations``) and a signature's ``*`` and ``/``."""
    spans = []

    def add(node: ast.AST) -> None:
        spans.append(((node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if isinstance(node.func.value, ast.Name) and node.func.value.id in calls:
                for a in [*node.args, *node.keywords]:
                    add(a)
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for a in [*node.exc.args, *node.exc.keywords]:
                add(a)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            add(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            add(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.returns is not None:
                add(node.returns)
            a = node.args
            params = [*a.posonlyargs, *a.args, a.vararg, *a.kwonlyargs, a.kwarg]
            named = [p for p in params if p is not None]
            defaults = [d for d in [*a.defaults, *a.kw_defaults] if d is not None]
            if named:  # the parameter list less its default values: only markers to mutate
                first, last = named[0], named[-1]
                holes = sorted(((d.lineno, d.col_offset), (d.end_lineno, d.end_col_offset))
                               for d in defaults)  # fmt: skip
                start = (first.lineno, first.col_offset)
                for h0, h1 in holes:
                    spans.append((start, h0))
                    start = h1
                spans.append((start, (last.end_lineno, last.end_col_offset + 1)))
    return spans


def _inside(pos: tuple[int, int], spans: list[tuple[tuple, tuple]]) -> bool:
    return any(a <= pos < b for a, b in spans)


def mutants(path: str, operators: str, calls: list[str]) -> list[dict]:
    """Every (operator, occurrence) cosmic-ray applies to ``path``, with its line before and
    after; those on quiet lines left out."""
    import cosmic_ray.plugins
    from cosmic_ray.ast import ast_nodes, get_ast
    from cosmic_ray.mutating import mutate_code

    source = (ROOT / path).read_text()
    quiet = quiet_spans(source, calls)
    before = source.splitlines()
    out = []
    for op_name in cosmic_ray.plugins.operator_names():
        if not re.fullmatch(operators, op_name):
            continue
        op = cosmic_ray.plugins.get_operator(op_name)()
        positions = [p for node in ast_nodes(get_ast(source)) for p in op.mutation_positions(node)]
        for occurrence, (start, _end) in enumerate(positions):
            line = start[0]
            if _inside(tuple(start), quiet):
                continue
            mutated = mutate_code(source, op, occurrence)
            if mutated is None:
                continue
            after = mutated.splitlines()
            # The first line that differs (a mutation may reflow nothing else).
            diff = next(
                (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), line - 1
            )
            out.append({
                "file": path, "line": diff + 1, "operator": op_name, "occurrence": occurrence,
                "before": before[diff].strip(), "after": after[diff].strip(), "source": mutated,
            })  # fmt: skip
    return out


# ----------------------------------------------------------------------------- the runner


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

        args = [*tests, "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
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
        cmd = [sys.executable, __file__, "--worker", str(jobs_file)]
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
    reached = [_reached(m, ran[str(ROOT / m["file"])]) for m in found]
    todo = [m for m, r in zip(found, reached, strict=True) if r]
    timeout = max(run["timeout_min_s"], run["timeout_factor"] * base["seconds"])
    results = iter(call(todo, run["jobs"], timeout) if todo else [])
    out = [next(results) if r else {"rc": 0, "seconds": 0.0, "unreached": True} for r in reached]
    return base["seconds"], out


def _reached(m: dict, ran: set[int]) -> bool:
    """Whether the statement holding mutant ``m`` ran in the unmutated tests (its header
    lines: a compound statement's body is its own statements). True when unsure."""
    best = None
    for start, end in _statement_heads(m["file"]):
        if start <= m["line"] <= end and (best is None or start >= best[0]):
            best = (start, end)
    return best is None or any(best[0] <= line <= best[1] for line in ran)


@functools.cache
def _statement_heads(path: str) -> list[tuple[int, int]]:
    """(first line, last line before its first child statement) of every statement."""
    heads = []
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.stmt):
            fields = ("body", "orelse", "finalbody", "handlers")
            children = [c for f in fields for c in getattr(node, f, [])]
            end = min((c.lineno for c in children), default=node.end_lineno + 1) - 1
            heads.append((node.lineno, end))
    return heads


def _progress(group: str, m: dict, r: dict, n: int, total: int) -> None:
    mark = {"killed": "k", "timeout": "T", "survived": "S", "error": "E"}[status(r["rc"])]
    where = f"{m['file']}:{m['line']}"
    print(f"  [{group} {n}/{total}] {mark} {r['seconds']:6.1f}s {where} {m['operator'][5:]}",
          flush=True)  # fmt: skip


# ----------------------------------------------------------------------------- report


def is_equivalent(m: dict, equivalent: list[dict]) -> str | None:
    """The config's reason when ``m`` is a listed equivalent mutant, else None."""
    for e in equivalent:
        if (e["file"], e["operator"], e["line"], e["mutant"]) == (
            m["file"],
            m["operator"],
            m["before"],
            m["after"],
        ):
            return e["why"]
    return None


def status(rc: int | None) -> str:
    if rc is None:
        return "timeout"
    if rc in (1, 2):  # tests failed, or could not be collected (the mutant broke an import)
        return "killed"
    if rc == 0:
        return "survived"
    return "error"  # pytest's internal/usage errors, the runner's own: not the tests' verdict


COUNTS = ("mutants", "killed", "timeout", "survived", "equivalent", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--group", action="append", help="only these groups (repeatable); their "
                    "results replace the same groups' in an existing --out")  # fmt: skip
    ap.add_argument("--survivors", action="store_true", help="test again only what --out "
                    "records as survived (after adding tests; the modules unchanged)")  # fmt: skip
    ap.add_argument("--limit", type=int, help="at most this many mutants per group (a trial)")
    ap.add_argument("--jobs", type=int, help="mutants at once (default: the config's)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--logs", type=Path, help="keep each mutant's test output here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)

    cfg = tomllib.loads(args.config.read_text())
    run = cfg["run"] | ({"jobs": args.jobs} if args.jobs else {})
    groups = [g for g in cfg["group"] if not args.group or g["name"] in args.group]
    if args.group and len(groups) != len(args.group):
        raise SystemExit(f"error: no such group in {args.config}: {args.group}")
    old = json.loads(args.out.read_text()) if args.out.is_file() else None
    if args.survivors and old is None:
        raise SystemExit(f"error: --survivors: no earlier results in {args.out}")
    rows, per_group = [], []
    with tempfile.TemporaryDirectory(prefix="vicmae-mutate-") as tmp:
        logs = args.logs or Path(tmp)
        for g in groups:
            found = [m for path in g["modules"] for m in mutants(path, run["operators"],
                                                                 run["quiet_calls"])]  # fmt: skip
            found = found[: args.limit] if args.limit else found
            before = [r for r in old["mutants_tested"] if r["group"] == g["name"]] if old else []
            if args.survivors:
                found, kept = _survivors(found, before)
            else:
                kept = []
            # Listed equivalents are not run: no test can tell them from the original.
            todo = [m for m in found if is_equivalent(m, cfg.get("equivalent", [])) is None]
            print(f"{g['name']}: {len(todo)} mutants to test, tests: {' '.join(g['tests'])}",
                  flush=True)  # fmt: skip
            g0 = time.monotonic()
            base_s, results = run_group(g, todo, run, logs / g["name"])
            done = {id(m): r for m, r in zip(todo, results, strict=True)}
            rows += kept
            for m in found:
                r = done.get(id(m), {"rc": 0, "seconds": 0.0})
                rows.append({k: m[k] for k in ("file", "line", "operator", "before", "after")}
                            | {"group": g["name"], "status": status(r["rc"]), "rc": r["rc"],
                               "seconds": r["seconds"]}
                            | ({"unreached": True} if r.get("unreached") else {}))  # fmt: skip
            spent = (time.monotonic() - g0) / 60
            if args.survivors:
                spent += next(x["minutes"] for x in old["groups"] if x["group"] == g["name"])
            per_group.append({"group": g["name"], "modules": g["modules"], "tests": g["tests"],
                              "unmutated_tests_s": base_s, "minutes": round(spent, 1)})  # fmt: skip
    if args.group and not args.limit and old is not None:  # the other groups' results stay
        names = {g["group"] for g in per_group}
        per_group = [g for g in old["groups"] if g["group"] not in names] + per_group
        rows = [r for r in old["mutants_tested"] if r["group"] not in names] + rows
        order = [g["name"] for g in cfg["group"]]
        per_group.sort(key=lambda g: order.index(g["group"]) if g["group"] in order else 99)
    for r in rows:  # the config's equivalents as they are now
        why = is_equivalent(r, cfg.get("equivalent", []))
        r.pop("why", None)
        if r["status"] in ("survived", "equivalent"):
            r["status"] = "survived" if why is None else "equivalent"
            r |= {"why": why} if why is not None else {}
    for g in per_group:
        mine = [r["status"] for r in rows if r["group"] == g["group"]]
        g |= {"mutants": len(mine), **{k: mine.count(k) for k in COUNTS[1:]}}
        g["unreached"] = sum(1 for r in rows if r["group"] == g["group"]
                             and r["status"] == "survived" and r.get("unreached"))  # fmt: skip
    report(per_group, rows, run, args)


def _survivors(found: list[dict], before: list[dict]) -> tuple[list[dict], list[dict]]:
    """(this run's mutants that ``before`` records as survived, ``before``'s other rows)."""
    by_key: dict[tuple, list[dict]] = {}
    for m in found:
        by_key.setdefault((m["file"], m["operator"], m["before"], m["after"]), []).append(m)
    again, kept = [], []
    for r in before:
        if r["status"] not in ("survived", "error"):
            kept.append(r)
            continue
        same = by_key.get((r["file"], r["operator"], r["before"], r["after"]))
        if not same:
            raise SystemExit(f"error: {r['file']}:{r['line']} changed since the recorded run; "
                             "run its group again without --survivors")  # fmt: skip
        again.append(same.pop(0))
    return again, kept


def _score(c: dict) -> float:
    n = c["mutants"] - c["equivalent"] - c["error"]
    return (c["killed"] + c["timeout"]) / n if n else 1.0


def report(per_group: list, rows: list, run: dict, args) -> None:
    """Print the table and the survivors; write the results JSON."""
    from importlib.metadata import version

    total = {k: sum(g[k] for g in per_group) for k in (*COUNTS, "unreached")}
    minutes = sum(g["minutes"] for g in per_group)
    print(f"\n{'group':<12} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} "
          f"{'unrun':>5} {'equiv.':>6} {'error':>5} {'score':>6} {'minutes':>7}")  # fmt: skip
    for g in [*per_group, {"group": "all", **total, "minutes": minutes}]:
        print(f"{g['group']:<12} {g['mutants']:>7} {g['killed']:>7} {g['timeout']:>7} "
              f"{g['survived']:>8} {g['unreached']:>5} {g['equivalent']:>6} {g['error']:>5} "
              f"{_score(g):>6.1%} {g['minutes']:>7.1f}")  # fmt: skip
    print("(unrun: survivors on a statement no test of the group runs, so not run)")
    if total["error"]:
        print(
            f"warning: {total['error']} mutant(s) ended in a pytest or runner error (see "
            "--logs): neither killed nor survived, left out of the score"
        )
    line = "{file}:{line} {operator}: {before} -> {after}"
    survivors = [line.format(**r) + ("  (no test runs it)" if r.get("unreached") else "")
                 for r in rows if r["status"] == "survived"]  # fmt: skip
    for s in survivors:
        print("survived:", s)
    out = {
        "tool": f"cosmic-ray {version('cosmic-ray')} operators, scripts/mutate.py's runner",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "jobs": run["jobs"], "limit": args.limit, "minutes": round(minutes, 1),
        "score": round(_score(total), 4), **total, "groups": per_group,
        "survivors": survivors,
        "equivalent": [line.format(**r) + f"  ({r['why']})" for r in rows
                       if r["status"] == "equivalent"],
        "mutants_tested": rows,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
