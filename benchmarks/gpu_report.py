"""The arithmetic and the summary table of ``gpu_check.py`` (pure functions, tested on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

from vicmae_data.atomic import write_text_atomic


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (never a half-written file under its name)."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


E2E_HEADLINE = (
    "samples_per_s_median", "samples_per_s_overall", "data_wait_pct_overall",
    "step_only_samples_per_s", "e2e_over_step_only",
)  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if "samples_per_s" in row:
            rows.append(row)
    return rows


def summarise_e2e(rows: list[dict], run: dict, step_only: dict | None) -> dict:
    """Throughput and data wait over the logging windows after the first (warm-up) one.

    ``run`` names the run's settings (``batch`` at least) and is copied into the result.

    ``overall`` weighs each window by its duration (so it includes epoch ends: loader
    restarts, checkpoints); ``median`` is the typical window; ``clean`` windows are those
    inside one epoch.
    """
    steady, batch = rows[1:], run["batch"]
    out: dict = {
        **run, "steps": rows[-1]["step"] if rows else 0, "windows": len(steady),
        "rows": rows,
    }  # fmt: skip
    if steady:
        prev = [rows[0], *steady[:-1]]
        secs = [
            (r["step"] - p["step"]) * batch / max(r["samples_per_s"], 1e-9)
            for r, p in zip(steady, prev, strict=True)
        ]
        rates = sorted(r["samples_per_s"] for r in steady)
        clean = [
            r["samples_per_s"]
            for r, p in zip(steady, prev, strict=True)
            if int(r.get("epoch", 0)) == int(p.get("epoch", 0))
        ]
        total = sum(secs)
        out.update(
            samples_per_s_median=rates[len(rates) // 2],
            samples_per_s_overall=sum((r["step"] - p["step"]) * batch for r, p in
                                      zip(steady, prev, strict=True)) / max(total, 1e-9),
            samples_per_s_clean_median=sorted(clean)[len(clean) // 2] if clean else None,
            data_wait_pct_overall=sum(r.get("data_wait_pct", 0) * t for r, t in
                                      zip(steady, secs, strict=True)) / max(total, 1e-9),
            data_wait_pct_median=sorted(r.get("data_wait_pct", 0) for r in steady)[
                len(steady) // 2],
        )  # fmt: skip
    if step_only:
        out["step_only_samples_per_s"] = step_only.get("samples_per_s")
        out["step_only_source"] = "train_b (bench_train_gpu.py, eager, same batch)"
        if out.get("samples_per_s_median") and step_only.get("samples_per_s"):
            out["e2e_over_step_only"] = out["samples_per_s_median"] / step_only["samples_per_s"]
    return out


def summary_rows(
    train: dict[str, dict | None], figures: dict, sections: list[dict]
) -> list[tuple[str, str]]:
    """(label, value) rows of the summary table printed last."""
    rows = []
    for name, r in train.items():
        if r:
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "n/a"
            mem = r.get("peak_memory_gib")
            rows.append((
                f"{name}: {r['arch']} b{r['batch']}{' compiled' if r.get('compile') else ''}",
                f"{r['samples_per_s']:.0f} samples/s, {r['gflops_per_sample']:.0f} GFLOP/sample,"
                f" MFU {mfu}, peak {mem:.1f} GiB" if mem else
                f"{r['samples_per_s']:.1f} samples/s, MFU {mfu}",
            ))  # fmt: skip
        else:
            rows.append((name, "no result"))
    e = figures.get("e2e")
    if e:
        rows.append((
            "e2e: pretrain + loader",
            f"{_f(e.get('samples_per_s_median'))} samples/s (median window), "
            f"{_f(e.get('samples_per_s_overall'))} overall, data wait "
            f"{_f(e.get('data_wait_pct_overall'), '.1f')}%; step only "
            f"{_f(e.get('step_only_samples_per_s'))} "
            f"(ratio {_f(e.get('e2e_over_step_only'), '.2f')})",
        ))  # fmt: skip
    for name, by_w in (figures.get("loader", {}).get("samples_per_s") or {}).items():
        rows.append((f"loader: {name}", ", ".join(f"{w}w {v:.0f}" for w, v in by_w.items())))
    for name, status in (figures.get("paths") or {}).items():
        rows.append((f"path: {name}", str(status)))
    for sec in sections:
        rows.append((f"section {sec['section']}", f"{sec['status']} ({sec['seconds']} s)"))
    return rows


def _f(x, fmt: str = ".0f") -> str:
    return "n/a" if x is None else format(x, fmt)
