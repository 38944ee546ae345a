"""`bitlaw backtest` wall time on public and demo tables (figures, no assertions; issue 26's target: <= 30 s
each on 2 cores).

    .venv/bin/python benchmarks/backtest_speed.py            # demo, Epoch, Gemstones
    .venv/bin/python benchmarks/backtest_speed.py --only epoch

1. The demo table (results/demo/runs.csv, 108 runs, 4 sizes), ``--by format``, every law it supports
   (chinchilla, precision, efficiency, penalty, coupled): one origin (fit on 3 sizes, predict the 4th) and the
   all-sizes fit for AIC, 2 fits per law and format.
2. Epoch AI's 240 Chinchilla points (tests/data/epoch_chinchilla_svg_extracted_data.csv; the 5 highest losses
   dropped, D = C/6N, as Epoch did), chinchilla: 43 sizes, 40 origins (3..42 sizes fitted) and the all-sizes
   fit.
3. Gemstones (tests/data/gemstones_hot.jsonl: 22 runs, 10 checkpoints each), chinchilla and coupled, twice:
   with ``run=run_name`` (several rows per run, bootstrapped by run) and without the run column (the split is
   by N, so each run's checkpoints still stay together; only the check that each run has one N is lost).
Each command runs as `python -m bitlaw backtest ... -o TMP` in a subprocess: the wall time includes Python's
start and the imports.  The machine's load average is printed with the figures: on a shared box timings are
only comparable at similar load.

Measured 2026-12-03 on the idle 2-core AMD EPYC machine (load average ~1), --workers 2, every law each table
supports, the forecast intervals scored: demo 7.8 s wall, 12.2 s CPU; Epoch 14.2 s wall, 21.7 s CPU;
Gemstones with the run column 10.5 s wall, 17.0 s CPU, without it 8.7 s wall, 13.6 s CPU.  Earlier the same
day, on 2 cores shared with other jobs (load average ~9), before coupled and the intervals: demo 29.6 s, Epoch
17.8 s, Gemstones 18.6 s wall.  About 2 s of each CPU figure is Python's start and imports.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
GEMSTONES = "N=params_active_precise,D=tokens,loss=final_loss"


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def epoch_240(tmp: Path) -> Path:
    frame = pd.read_csv(DATA / "epoch_chinchilla_svg_extracted_data.csv")
    frame = frame[frame["loss"] < sorted(frame["loss"])[-5]].copy()
    frame["D"] = frame["Training FLOP"] / (6 * frame["Model Size"])
    path = tmp / "epoch_240.csv"
    frame.to_csv(path, index=False)
    return path


def timed(label: str, args: list[str], out: Path) -> None:
    """Run `bitlaw backtest ARGS -o OUT`; print wall and CPU seconds, the exit code and the summary lines."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bitlaw", "backtest", *args, "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"\n{label}: {wall:.1f} s wall, {cpu:.1f} s CPU (user+sys, all processes), exit {done.returncode}; "
          f"{load_average()}")
    said = (done.stdout + done.stderr).strip().splitlines()
    keep = [line for line in said if line.startswith(("backtest:", "chinchilla", "precision", "efficiency",
                                                      "penalty", "coupled", "  ", "bitlaw backtest:"))]
    print("\n".join(f"  | {line}" for line in keep or said[-5:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("demo", "epoch", "gemstones"), help="one table only")
    parser.add_argument("--workers", default="2", help="bitlaw backtest --workers (default 2)")
    args = parser.parse_args()
    common = ["--workers", args.workers]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if args.only in (None, "demo"):
            demo = [str(ROOT / "results/demo/runs.csv"), "--by", "format", *common]
            timed("demo table, --by format, every law", demo, tmp / "demo")
        if args.only in (None, "epoch"):
            epoch = [str(epoch_240(tmp)), "--columns", "N=Model Size", *common]
            timed("Epoch's 240 points, chinchilla", epoch, tmp / "epoch")
        if args.only in (None, "gemstones"):
            table = str(DATA / "gemstones_hot.jsonl")
            timed("Gemstones, run=run_name", [table, "--columns", f"{GEMSTONES},run=run_name", *common],
                  tmp / "gem_run")
            timed("Gemstones, no run column", [table, "--columns", GEMSTONES, *common], tmp / "gem")


if __name__ == "__main__":
    main()
