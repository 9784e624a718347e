"""How long the inspection commands take to start, on a small file (issue: under 2 s).

    python benchmarks/bench_startup.py              # a generated Kinetics-style file
    python benchmarks/bench_startup.py FILE.beton   # your file

Runs each command as a user would (a fresh ``vicmae-data`` process each time), ``--repeat``
times, and prints the median and the fastest wall time: ``info FILE``, ``verify FILE``,
``preview FILE --out ...`` and ``--help``. ``verify`` decodes every frame, so on a large
file its time is work, not start-up; the small generated file keeps it to start-up. The
modules each command imports are also counted: none of ffcv, torch, numba or OpenCV.

Writes ``startup.json`` to ``benchmarks/out/`` (``--update-results``:
``benchmarks/results/``). Timings on a shared machine are noisy: rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from outputs import add_output_options, output_dir

EXE = str(Path(sys.executable).parent / "vicmae-data")
HEAVY = ("ffcv", "torch", "numba", "cv2")


def sample_file(work: Path) -> Path:
    """A small real .beton: 8 synthetic Kinetics clips converted at 128 px."""
    from vicmae_data.synth.dataset import synth_dataset
    from vicmae_data.write.convert import convert

    root = work / "k400"
    synth_dataset("kinetics400", root, videos=8, seed=0, splits=("train",))
    out = work / "k400.beton"
    convert("kinetics400", root, out, workers=2, short_side=128)
    return out


def timed(argv: list[str], repeat: int) -> list[float]:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        runs.append(time.perf_counter() - start)
    return runs


def heavy_imports(command: str, path: Path) -> list[str]:
    """The heavy modules loaded by running ``command`` in-process."""
    code = (
        "import sys; from vicmae_cli.data import app\n"
        f"sys.argv = ['vicmae-data', {command!r}, {str(path)!r}]\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("beton", nargs="?", type=Path, help="a .beton (default: generated)")
    parser.add_argument("--repeat", type=int, default=5)
    add_output_options(parser)  # benchmarks/out/ unless --update-results
    args = parser.parse_args()
    results = output_dir(args) / "startup.json"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = args.beton or sample_file(work)
        commands = {
            "info": [EXE, "info", str(path)],
            "verify": [EXE, "verify", str(path)],
            "preview": [EXE, "preview", str(path), "--out", str(work / "p.png")],
            "--help": [EXE, "--help"],
        }
        rows = {}
        for name, argv in commands.items():
            runs = timed(argv, args.repeat)
            rows[name] = {"median_s": statistics.median(runs), "min_s": min(runs)}
        rows["info"]["heavy_imports"] = heavy_imports("info", path)
        size = path.stat().st_size
    print(f"start-up of vicmae-data on a {size / 1e6:.1f} MB file ({args.repeat} runs each)")
    print(f"{'command':<10} {'median s':>9} {'fastest s':>10}")
    for name, row in rows.items():
        print(f"{name:<10} {row['median_s']:>9.2f} {row['min_s']:>10.2f}")
    print(f"heavy modules imported by info: {rows['info']['heavy_imports'] or 'none'}")
    result = {
        "file_bytes": size,
        "repeat": args.repeat,
        "commands": rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average": os.getloadavg(),
    }
    results.write_text(json.dumps(result, indent=2))
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
