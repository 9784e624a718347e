"""The section runner of ``gpu_check.py``: subprocesses under hard caps, one deadline.

Every section is a subprocess started in its own process group and killed whole when its
cap (or the overall deadline) runs out, so one failure or hang never stops the rest. Each
section's end is recorded in ``gpu_check.json`` at once, and every ``gpu_*.json`` and the
log are copied to ``$OUT`` (the device runner's folder of files to bring back) as they
change, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from gpu_report import write_json


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
