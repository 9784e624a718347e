"""Curves of a pretraining, linear-probe or fine-tuning run, from ``RUN_DIR/metrics.jsonl``.

``loss.png`` (training losses, and the validation loss where there is one),
``throughput.png`` (samples/s and the share of time spent waiting for data) and, for the
evaluations, ``accuracy.png`` (validation top-1, top-5).
"""

from __future__ import annotations

import os
from pathlib import Path

from vicmae.engine.metrics import read_metrics

LOSS_KEYS = ("loss", "loss_recon", "loss_contrastive", "val_loss")
ACCURACY_KEYS = ("val_top1", "val_top5")


def plot_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write the run's PNGs (see the module docstring); return their paths.

    Example: ``plot_run("runs/k400")`` -> ``[runs/k400/plots/loss.png, .../throughput.png]``.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}: metrics.jsonl has no rows yet")
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        return [p[0] for p in pts], [p[1] for p in pts]

    paths: list[Path] = []
    name = Path(run_dir).name

    def save(fig, ax, title: str, file: str) -> None:
        ax.set_title(f"{title}: {name}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(out / file)
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)

    def lines(keys: tuple[str, ...], ylabel: str, title: str, file: str, **style) -> None:
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in keys:
            x, y = series(key)
            if x:
                ax.plot(x, y, label=key, **style)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend()
        save(fig, ax, title, file)

    lines(LOSS_KEYS, "loss", "losses", "loss.png")

    x, y = series("samples_per_s")
    if x:
        fig, ax1 = plt.subplots(figsize=(7, 4))
        ax1.plot(x, y, color="tab:blue", label="samples/s")
        ax1.set_xlabel("step")
        ax1.set_ylabel("samples/s", color="tab:blue")
        x, y = series("data_wait_pct")
        if x:
            ax2 = ax1.twinx()
            ax2.plot(x, y, color="tab:orange", label="waiting for data (%)")
            ax2.set_ylabel("waiting for data (% of step)", color="tab:orange")
            ax2.set_ylim(0, 100)
        save(fig, ax1, "throughput", "throughput.png")

    if any(series(k)[0] for k in ACCURACY_KEYS):
        lines(ACCURACY_KEYS, "validation accuracy (%)", "accuracy", "accuracy.png", marker="o")
    return paths
