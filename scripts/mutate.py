"""`make mutate`: how many plausible single bugs in the numerical core the test suite catches.

    python scripts/mutate.py                      # every group, a fixed sample of each
    python scripts/mutate.py --all                # every mutant (~2 h on 2 cores)
    python scripts/mutate.py --group loop --limit 10   # a few mutants: check the harness

cosmic-ray (8.x) makes the mutants: its operators, their positions in each module and the
mutated source (parso, formatting kept). They are tested by a runner of our own, because
cosmic-ray runs each mutant as a new test process that writes the mutant to disk: here
importing torch, ffcv and timm takes 5-30 s a process, more than most mutants' tests. The
runner starts one process per group with those libraries imported, forks it per mutant
(``run.jobs`` at a time), and the child imports the mutated module from memory (an import
hook in front of the file), then runs the group's tests with ``pytest -x``. Nothing on
disk changes, so mutants run side by side and numba's cache is never fed a mutant.

A mutant is killed when the tests fail (a test running past ``run.test_timeout_s`` fails:
a mutated loop that never ends), crash (a signal: a mutated plan sends the kernels to a bad
address), or time out as a whole; survived when they pass. The
unmutated run is traced first: a mutant on a statement no test of its group runs is a
survivor without being run ("unrun"). ``[[equivalent]]`` entries of the config are
survivors that no test can kill; they are not run, and the score is killed / (mutants -
equivalent). Writes ``benchmarks/results/mutation.json`` (every mutant's status, each
survivor with file:line and the mutation) and prints a table. Not part of ``make test``.

Every mutant of the seven groups is ~1,400 test runs, ~2 hours on 2 cores: over the
~30-minute budget. So by default each group tests a fixed random sample of its
non-equivalent mutants (``run.sample`` of the config, the same seed every run, so a rerun
on unchanged code tests the same mutants), and the table gives the score with its 95%
interval for the sample (Wilson); ``--all`` tests every one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import tempfile
import time
import tomllib
from pathlib import Path

from mutant_runner import run_group, status, worker
from mutants import ROOT, mutants

CONFIG = ROOT / "scripts" / "mutation.toml"
RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"


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


COUNTS = ("mutants", "killed", "timeout", "survived", "equivalent", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--group", action="append", help="only these groups (repeatable); their "
                    "results replace the same groups' in an existing --out")  # fmt: skip
    ap.add_argument("--survivors", action="store_true", help="test again only what --out "
                    "records as survived (after adding tests; the modules unchanged)")  # fmt: skip
    ap.add_argument("--report", action="store_true", help="run nothing: the table of --out "
                    "with the config's equivalents as they are now")  # fmt: skip
    ap.add_argument("--limit", type=int, help="at most this many mutants per group (a trial)")
    ap.add_argument("--all", action="store_true", help="every mutant, not the config's "
                    "run.sample per group (~2 h on 2 cores)")  # fmt: skip
    ap.add_argument("--jobs", type=int, help="mutants at once (default: the config's)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--logs", type=Path, help="keep each mutant's test output here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)

    cfg = tomllib.loads(args.config.read_text())
    equivalent = cfg.get("equivalent", [])
    run = cfg["run"] | ({"jobs": args.jobs} if args.jobs else {})
    groups = [g for g in cfg["group"] if not args.group or g["name"] in args.group]
    if args.group and len(groups) != len(args.group):
        raise SystemExit(f"error: no such group in {args.config}: {args.group}")
    old = json.loads(args.out.read_text()) if args.out.is_file() else None
    if (args.survivors or args.report) and old is None:
        raise SystemExit(f"error: no earlier results in {args.out}")
    rows, per_group = [], []
    if args.report:  # nothing run: the recorded results with the config's equivalents
        groups, per_group, rows = [], old["groups"], old["mutants_tested"]
    with tempfile.TemporaryDirectory(prefix="vicmae-mutate-") as tmp:
        logs = args.logs or Path(tmp)
        for g in groups:
            found = [m for path in g["modules"] for m in mutants(path, run["operators"],
                                                                 run["quiet_calls"])]  # fmt: skip
            for e in _stale(equivalent, g["modules"], found):
                print(f"  stale [[equivalent]] (no such mutant now, remove it): {e['file']}: "
                      f"{e['line']} -> {e['mutant']}", flush=True)  # fmt: skip
            found = found[: args.limit] if args.limit else found
            made = sum(1 for m in found if is_equivalent(m, equivalent) is None)
            before = [r for r in old["mutants_tested"] if r["group"] == g["name"]] if old else []
            if args.survivors:
                found, kept = _survivors(found, before)
            else:
                kept = []
            # Listed equivalents are not run: no test can tell them from the original.
            todo = [m for m in found if is_equivalent(m, equivalent) is None]
            if not (args.all or args.survivors or args.limit):
                todo, found = sample(todo, found, run["sample"])
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
                              "unmutated_tests_s": base_s, "minutes": round(spent, 1),
                              "made": made, "sampled": len(todo) < made})  # fmt: skip
    if args.group and not args.limit and old is not None:  # the other groups' results stay
        names = {g["group"] for g in per_group}
        per_group = [g for g in old["groups"] if g["group"] not in names] + per_group
        rows = [r for r in old["mutants_tested"] if r["group"] not in names] + rows
        order = [g["name"] for g in cfg["group"]]
        per_group.sort(key=lambda g: order.index(g["group"]) if g["group"] in order else 99)
    for r in rows:  # pytest's codes and the config's equivalents as they are now
        why = is_equivalent(r, equivalent)
        r.pop("why", None)
        if r["status"] in ("killed", "error"):
            r["status"] = status(r["rc"])
        if r["status"] in ("survived", "equivalent"):
            r["status"] = "survived" if why is None else "equivalent"
            r |= {"why": why} if why is not None else {}
    for g in per_group:
        mine = [r["status"] for r in rows if r["group"] == g["group"]]
        g |= {"mutants": len(mine), **{k: mine.count(k) for k in COUNTS[1:]}}
        g["unreached"] = sum(1 for r in rows if r["group"] == g["group"]
                             and r["status"] == "survived" and r.get("unreached"))  # fmt: skip
    report(per_group, rows, run, args)


def _stale(equivalent: list[dict], modules: list[str], found: list[dict]) -> list[dict]:
    """The config's equivalents in ``modules`` that match none of ``found`` (the code they
    describe has changed)."""
    return [e for e in equivalent
            if e["file"] in modules and not any(is_equivalent(m, [e]) for m in found)]  # fmt: skip


def sample(todo: list[dict], found: list[dict], k: int):
    """``k`` of ``todo`` (the mutants to run) drawn with a fixed seed, all of them when
    fewer, and ``found`` reduced to those plus what it holds beyond ``todo`` (the listed
    equivalents: reported, never run)."""
    if len(todo) <= k:
        return todo, found
    drop = {id(m) for m in todo} - {id(m) for m in random.Random(0).sample(todo, k)}
    return [m for m in todo if id(m) not in drop], [m for m in found if id(m) not in drop]


def interval(killed: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of a kill rate measured on ``n`` sampled mutants."""
    if n == 0:
        return 1.0, 1.0
    z, p = 1.96, killed / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


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
    n = total["mutants"] - total["equivalent"] - total["error"]
    low, high = interval(total["killed"] + total["timeout"], n)
    made = sum(g.get("made", g["mutants"] - g["equivalent"]) for g in per_group)
    if any(g.get("sampled") for g in per_group):
        print(f"sampled: {n} of {made} non-equivalent mutants; score {_score(total):.1%}, "
              f"95% interval {low:.1%}-{high:.1%} (--all tests every one)")  # fmt: skip
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
        "score": round(_score(total), 4), "score_95": [round(low, 4), round(high, 4)],
        "made": made, **total, "groups": per_group,
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
