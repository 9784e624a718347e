"""The arithmetic and the summary table of ``gpu_check.py`` (pure functions, tested on CPU)."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (never a half-written file under its name)."""
    # Imported here: `gpu_check.py --list` runs before the bundle that holds vicmae is installed.
    from vicmae_data.atomic import write_text_atomic

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


def summarise_e2e(
    rows: list[dict], run: dict, step_only: dict | None, step_source: str = ""
) -> dict:
    """Throughput and data wait over the logging windows after the first (warm-up) one.

    ``run`` names the run's settings (``batch`` at least: samples per optimiser step) and is
    copied into the result; ``step_only`` is the step alone's figures (``samples_per_s``)
    from ``step_source``.

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
        out["step_only_source"] = step_source
        if out.get("samples_per_s_median") and step_only.get("samples_per_s"):
            out["e2e_over_step_only"] = out["samples_per_s_median"] / step_only["samples_per_s"]
    return out


# The row of each bench_loader.py table that the scaling figures are about.
LOADER_ROWS = {"samples_per_s": "vicmae (ffcv + libwebp)", "clips_per_s": "vicmae clips 16x4"}


def loader_scaling(by_workers: dict, key: str, workers: tuple[int, ...], status: str) -> dict:
    """bench_loader.py's ``by_workers`` (``key``: ``samples_per_s`` or ``clips_per_s``) as
    ``{key: {contender: {workers: rate}}, "runs": ..., "over_1": {workers: ours / ours at
    1}}``; a count it did not reach gets ``status``. Issue 18 aims at 16 workers >= 12 x 1."""
    runs = {str(w): by_workers.get(str(w), {"status": status}) for w in workers}
    table: dict[str, dict[str, float]] = {}
    for w, r in runs.items():
        for name, v in (r.get(key) or {}).items():
            table.setdefault(name, {})[w] = v
    ours = table.get(LOADER_ROWS[key], {})
    one = ours.get("1")
    over = {w: v / one for w, v in sorted(ours.items(), key=lambda kv: int(kv[0]))} if one else {}
    out = {key: table, "runs": runs, "over_1": over}
    if "16" in over:
        out["aim_16_over_1_at_least_12"] = over["16"] >= 12
    return out


FINETUNE_HEADLINE = (
    "samples_per_s_median", "samples_per_s_overall", "data_wait_pct_overall",
    "e2e_over_step_only",
)  # fmt: skip


def finetune_headline(result: dict) -> dict:
    """A fine-tune section's figures for the summary: the step alone's and end to end's."""
    step, e2e = result.get("step") or {}, result.get("e2e") or {}
    keys = ("kind", "arch", "frames", "batch", "samples_per_s", "gflops_per_sample", "mfu",
            "peak_memory_gib")  # fmt: skip
    return {
        "step": {k: step.get(k) for k in keys},
        "e2e": {k: e2e.get(k) for k in ("batch", "accumulation", *FINETUNE_HEADLINE)},
    }


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
    loader = figures.get("loader") or {}
    for key, unit in (("samples_per_s", "samples/s"), ("clips_per_s", "clips/s")):
        for name, by_w in (loader.get(key) or {}).items():
            rates = sorted(by_w.items(), key=lambda kv: int(kv[0]))
            rows.append((f"loader: {name}", f"{unit}: " + ", ".join(f"{w}w {v:.0f}" for w, v in
                                                                    rates)))  # fmt: skip
    for key, what in (("over_1", "pairs"), ("clips_over_1", "clips")):
        over = loader.get(key) or {}
        if len(over) > 1:
            w = max(over, key=int)
            rows.append((f"loader scaling, {what}", f"{w} workers = {over[w]:.1f}x 1 worker"
                         + (" (aim >= 12x)" if w == "16" else "")))  # fmt: skip
    for name in ("finetune_video", "finetune_image"):
        if name in figures:
            rows.extend(_finetune_rows(name, figures[name]))
    for name, status in (figures.get("paths") or {}).items():
        rows.append((f"path: {name}", str(status)))
    for sec in sections:
        rows.append((f"section {sec['section']}", f"{sec['status']} ({sec['seconds']} s)"))
    return rows


def _finetune_rows(name: str, fig: dict) -> list[tuple[str, str]]:
    step, e2e = fig.get("step") or {}, fig.get("e2e") or {}
    rows = []
    if step.get("samples_per_s") is not None:
        what = f"{step['frames']}-frame clips" if step.get("kind") == "clips" else "images"
        mfu = f"{step['mfu']:.1%}" if step.get("mfu") is not None else "n/a"
        mem = step.get("peak_memory_gib")
        rows.append((
            f"{name}: {step['arch']} {what} b{step['batch']}",
            f"{step['samples_per_s']:.1f} samples/s, {step['gflops_per_sample']:.0f} "
            f"GFLOP/sample, MFU {mfu}, peak {f'{mem:.1f} GiB' if mem else 'n/a'}",
        ))  # fmt: skip
    else:
        rows.append((f"{name}: step", "no result"))
    if e2e.get("samples_per_s_median") is not None:
        rows.append((
            f"{name}: end to end, batch {e2e['batch']} ({e2e.get('accumulation')} x micro)",
            f"{_f(e2e.get('samples_per_s_median'), '.1f')} samples/s (median window), "
            f"{_f(e2e.get('samples_per_s_overall'), '.1f')} overall, data wait "
            f"{_f(e2e.get('data_wait_pct_overall'), '.1f')}%; x step alone "
            f"{_f(e2e.get('e2e_over_step_only'), '.2f')}",
        ))  # fmt: skip
    else:
        rows.append((f"{name}: end to end", "no result"))
    return rows


def _f(x, fmt: str = ".0f") -> str:
    return "n/a" if x is None else format(x, fmt)
