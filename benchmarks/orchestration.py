"""Orchestration overhead: how long from `python -m sweep -m` to a job doing work, local vs Slurm.

    .venv/bin/python benchmarks/orchestration.py [--jobs 20] [--launchers local,slurm] [--repeats 3]

Prints, per launcher:
- submit -> task start: from starting the submit command to the Hydra task function's first line, with
  the torch-free stand-in job (tests/slurm_app): the orchestration cost alone (interpreter start, Hydra
  composition, submitit pickling, sbatch and scheduling, unpickling in the job).
- submit -> first training step: the same with the real QAT job (`python -m sweep`, smallest rung), which
  adds importing torch and preparing the data. The first step's time is when metrics.jsonl appears
  minus the training time its first line accounts for (tokens / tokens_per_s).
- an N-job sweep of tiny real runs: wall time of the blocking submit command vs the sum of the runs'
  training times (summary.json wall_s) and of their Slurm elapsed times.
- per-run overhead of the local launcher (its worker pool; the process-per-run path, pool=false, is gone),
  one run at a time: (wall of an N-run sweep − wall of a 1-run sweep) / (N − 1) − the runs' mean training
  time (summary.json wall_s). Target: <= 0.3 s.
Figures only, no pass/fail; record `uptime` next to them (the machine is shared). Slurm figures need
the local cluster (sudo scripts/slurm-up.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ("model=tiny", "logger.wandb.mode=disabled", "train.threads=1")


def submit(launcher: str, sweep: Path, *overrides: str, app: str = "sweep") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bitlaw.submit", "--app", app, f"hydra/launcher={launcher}",
           f"hydra.sweep.dir={sweep}", *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"submit failed ({proc.returncode}):\n{out[-3000:]}")


def submit_to_task_start(launcher: str, work: Path) -> float:
    sweep = work / f"standin-{launcher}-{time.time_ns()}"
    t0 = time.time()
    finish(submit(launcher, sweep, "value=1", app="tests.slurm_app"))
    return json.loads((sweep / "value=1" / "run.json").read_text())["started"] - t0


def submit_to_first_step(launcher: str, work: Path) -> float:
    sweep = work / f"real-{launcher}-{time.time_ns()}"
    t0 = time.time()
    proc = submit(launcher, sweep, *TINY, "train.tokens=81920")
    metrics = sweep / "model=tiny,train.tokens=81920" / "metrics.jsonl"
    while not (metrics.exists() and metrics.stat().st_size > 0):
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    appeared = time.time()
    finish(proc)
    first = json.loads(metrics.read_text().splitlines()[0])
    return appeared - first["tokens"] / first["tokens_per_s"] - t0


def sweep_of_tiny_runs(launcher: str, work: Path, n_jobs: int) -> dict:
    sweep = work / f"array-{launcher}-{time.time_ns()}"
    t0 = time.time()
    finish(submit(launcher, sweep, *TINY, "train.tokens=40960", f"train.seed=range(0,{n_jobs})"))
    wall = time.time() - t0
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    result = {"jobs": len(summaries), "wall_s": wall, "sum_train_s": sum(s["wall_s"] for s in summaries)}
    if launcher == "slurm":
        ledger = [json.loads(line) for line in (sweep / ".bitlaw" / "jobs.jsonl").read_text().splitlines()]
        ids = ",".join(r["job_id"] for r in ledger)
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "ElapsedRaw", "-j", ids],
                             capture_output=True, text=True, check=True).stdout
        result["sum_slurm_elapsed_s"] = sum(int(x) for x in out.split())
    return result


def local_per_run_overhead(work: Path, n_runs: int) -> tuple[float, float]:
    """(seconds per run beyond its own training, mean training seconds), one run at a time."""
    walls, trained = [], []
    for n in (1, n_runs):
        sweep = work / f"overhead-{n}-{time.time_ns()}"
        t0 = time.time()
        finish(submit("local", sweep, *TINY, "train.tokens=8192", "hydra.launcher.parallel=1",
                      f"train.seed=range(0,{n})"))
        walls.append(time.time() - t0)
        trained = [json.loads(p.read_text())["wall_s"] for p in sweep.glob("*/summary.json")]
    mean_train = statistics.mean(trained)
    return (walls[1] - walls[0]) / (n_runs - 1) - mean_train, mean_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="size of the tiny-run sweep")
    parser.add_argument("--launchers", default="local,slurm")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each per-job overhead figure")
    parser.add_argument("--overhead-runs", type=int, default=10, help="runs of the per-run overhead sweeps")
    args = parser.parse_args()
    print(f"uptime: {os.popen('uptime').read().strip()}")
    with tempfile.TemporaryDirectory(prefix="bitlaw-bench-") as tmp:
        work = Path(tmp)
        if "local" in args.launchers.split(","):
            overhead, train_s = local_per_run_overhead(work, args.overhead_runs)
            print(f"local per-run overhead, worker pool: {overhead:.2f} s per run beyond its {train_s:.2f} s "
                  f"of training ({args.overhead_runs} runs, one at a time)")
        for launcher in args.launchers.split(","):
            task = [submit_to_task_start(launcher, work) for _ in range(args.repeats)]
            step = [submit_to_first_step(launcher, work) for _ in range(args.repeats)]
            print(f"{launcher:5s} submit -> task start      median {statistics.median(task):5.2f} s  "
                  f"(runs: {', '.join(f'{x:.2f}' for x in task)})")
            print(f"{launcher:5s} submit -> first train step median {statistics.median(step):5.2f} s  "
                  f"(runs: {', '.join(f'{x:.2f}' for x in step)})")
            arr = sweep_of_tiny_runs(launcher, work, args.jobs)
            extra = (f", sum of Slurm elapsed {arr['sum_slurm_elapsed_s']} s"
                     if "sum_slurm_elapsed_s" in arr else "")
            print(f"{launcher:5s} {arr['jobs']}-job sweep of tiny runs: wall {arr['wall_s']:.1f} s vs sum of "
                  f"training times {arr['sum_train_s']:.1f} s{extra}")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
