"""``bitlaw status SWEEP_DIR``: one line per run (done / running / pending / failed / cancelled / unknown)
and the totals, from the sweep dir alone (sweep/status.py); a single run's dir works too. Exit status 1
when a run failed or was cancelled."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fit.errors import InputError
from sweep.status import STATES, RunState, sweep_status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR",
                        help="a sweep dir (hydra.sweep.dir) or a single run's dir (hydra.run.dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--no-slurm", action="store_true",
                        help="do not call squeue/sacct (runs without a final summary show as unknown)")


def run(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise InputError(f"SWEEP_DIR: {str(sweep_dir)!r} is not a directory")
    statuses = sweep_status(sweep_dir, query_slurm=not args.no_slurm)
    totals = {state: sum(s.state == state for s in statuses) for state in STATES}
    # scripts and CI can tell a sweep with failed or cancelled runs from a clean one without parsing
    exit_status = 1 if totals[RunState.FAILED] or totals[RunState.CANCELLED] else 0
    if args.json:
        print(json.dumps({"sweep_dir": str(sweep_dir), "runs": [s.as_dict() for s in statuses],
                          "totals": totals}, indent=1))
        return exit_status
    if not statuses:
        print(f"{sweep_dir}: no runs yet (no run dirs and no submissions recorded)")
        return 0
    width = max(len(s.run) for s in statuses)
    for s in statuses:
        job = f"[{s.job_id}] " if s.job_id else ""
        print(f"{s.state:9s} {s.run.ljust(width)}  {job}{s.detail}".rstrip())
    summary = ", ".join(f"{n} {state}" for state, n in totals.items() if n)
    print(f"{len(statuses)} runs: {summary}")
    return exit_status
