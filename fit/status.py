"""`bitlaw status SWEEP_DIR`: where every run of a sweep stands, from the sweep dir alone.

Reads the run dirs (design §3: run.json, summary.json) and the submission ledger that
`python -m sweep.submit` appends to, and asks Slurm (`squeue`, then `sacct` for jobs that left the queue)
about runs that have no final summary. fit/ does not import sweep/, so the ledger format is restated here:
`SWEEP_DIR/.bitlaw/jobs.jsonl`, one JSON object per submission, the last line per `run` wins, with keys
`run` (run dir relative to the sweep dir), `job_id`, `executor` (slurm|local), `stderr` (log file
relative to the sweep dir).

States: done (summary completed) · failed (summary failed/diverged, or the job ended without one) ·
cancelled · running · pending · unknown (no summary and no scheduler record, e.g. an interrupted local run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from fit.errors import InputError

LEDGER = Path(".bitlaw") / "jobs.jsonl"
STATES = ("done", "running", "pending", "failed", "cancelled", "unknown")
_RUN_FILES = ("run.json", "summary.json", "config.yaml")
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED"}
_RUNNING = {"RUNNING", "COMPLETING", "RESIZING", "STAGE_OUT", "SIGNALING"}  # COMPLETING: sacct lags
_LOG_TAIL_LINES = 3


@dataclass
class RunStatus:
    run: str
    state: str
    detail: str = ""
    job_id: str = ""
    slurm_state: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep dir (hydra.sweep.dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--no-slurm", action="store_true",
                        help="do not call squeue/sacct (runs without a final summary show as unknown)")


def run(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise InputError(f"SWEEP_DIR: {str(sweep_dir)!r} is not a directory")
    statuses = sweep_status(sweep_dir, query_slurm=not args.no_slurm)
    totals = {state: sum(s.state == state for s in statuses) for state in STATES}
    if args.json:
        print(json.dumps({"sweep_dir": str(sweep_dir), "runs": [asdict(s) for s in statuses],
                          "totals": totals}, indent=1))
        return 0
    if not statuses:
        print(f"{sweep_dir}: no runs yet (no run dirs and no submissions recorded)")
        return 0
    width = max(len(s.run) for s in statuses)
    for s in statuses:
        job = f"[{s.job_id}] " if s.job_id else ""
        print(f"{s.state:9s} {s.run.ljust(width)}  {job}{s.detail}".rstrip())
    summary = ", ".join(f"{n} {state}" for state, n in totals.items() if n)
    print(f"{len(statuses)} runs: {summary}")
    return 0


def sweep_status(sweep_dir: Path, query_slurm: bool = True) -> list[RunStatus]:
    """One RunStatus per run: every run dir, plus submitted runs whose dir does not exist yet."""
    ledger = _read_ledger(sweep_dir / LEDGER)
    runs = sorted(set(ledger) | set(_run_dirs(sweep_dir)))
    for run in runs:
        # Sweeps launched with plain `python -m sweep -m hydra/launcher=slurm` have no ledger, but each
        # started job recorded its Slurm id in run.json.
        job_id = (_read_json(sweep_dir / run / "run.json") or {}).get("slurm_job_id")
        if run not in ledger and job_id:
            ledger[run] = {"run": run, "job_id": str(job_id), "executor": "slurm", "stderr": ""}
    summaries = {run: _read_json(sweep_dir / run / "summary.json") for run in runs}
    open_jobs = [ledger[run]["job_id"] for run in runs
                 if run in ledger and ledger[run].get("executor") == "slurm"
                 and (summaries[run] or {}).get("status") not in ("completed", "failed", "diverged")]
    slurm = _slurm_states(open_jobs) if query_slurm and open_jobs else {}
    return [_run_status(sweep_dir, run, summaries[run], ledger.get(run), slurm) for run in runs]


def _run_status(sweep_dir: Path, run: str, summary: dict | None, submission: dict | None,
                slurm: dict[str, str]) -> RunStatus:
    job_id = str(submission["job_id"]) if submission else ""
    status = (summary or {}).get("status")
    if status == "completed":
        return RunStatus(run, "done", f"final_val_loss {summary.get('final_val_loss')}", job_id)
    if status in ("failed", "diverged"):
        log = f"; log: {_tail(sweep_dir / submission['stderr'], _LOG_TAIL_LINES)}" if submission else ""
        return RunStatus(run, "failed", f"{status}: {summary.get('reason')}{log}", job_id)
    if not submission:
        return RunStatus(run, "unknown", "no summary.json and no recorded job (interrupted local run?)")
    if submission.get("executor") == "local":
        alive = _pid_alive(job_id)
        return RunStatus(run, "running" if alive else "unknown",
                         "local process" if alive else "local job ended without summary.json", job_id)
    state = slurm.get(job_id, "")
    word = state.split()[0] if state else ""
    if word in _PENDING:
        return RunStatus(run, "pending", state, job_id, state)
    if word in _RUNNING:
        return RunStatus(run, "running", state, job_id, state)
    log_tail = _tail(sweep_dir / submission.get("stderr", ""), _LOG_TAIL_LINES)
    if word == "CANCELLED":
        return RunStatus(run, "cancelled", state, job_id, state)
    if word:  # FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, COMPLETED without a summary, ...
        return RunStatus(run, "failed", f"Slurm {state}; log: {log_tail}", job_id, state)
    return RunStatus(run, "unknown", "Slurm has no record of this job", job_id)


def _run_dirs(sweep_dir: Path) -> list[str]:
    """Run dirs under the sweep dir (any depth), skipping hidden dirs such as .submitit and .bitlaw."""
    found = []
    for root, dirs, files in os.walk(sweep_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("checkpoint", "wandb")]
        if any(name in files for name in _RUN_FILES) and Path(root) != sweep_dir:
            found.append(os.path.relpath(root, sweep_dir))
    return found


def _read_ledger(path: Path) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                latest[record["run"]] = record
    return latest


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _tail(path: Path, n_lines: int) -> str:
    try:
        if not path.is_file():
            return "(no log)"
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n_lines:])


def _pid_alive(pid: str) -> bool:
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """job id -> state: squeue for jobs still queued (exact, immediate), sacct for those that left it.

    squeue -r prints one line per array task (123_4, as recorded), not grouped pending tasks (123_[4-9]).
    """
    states: dict[str, str] = {}
    if shutil.which("squeue"):
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30)
        for line in out.stdout.splitlines():
            job_id, _, state = line.partition("|")
            # COMPLETING says only that the job is ending; sacct knows how (COMPLETED, CANCELLED, ...).
            if state.strip() != "COMPLETING":
                states[job_id.strip()] = state.strip()
    gone = [j for j in job_ids if j not in states]
    if gone and shutil.which("sacct"):
        # -X: the allocation's line only (not .batch/.0 steps); array tasks print as 123_4.
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(gone)],
                             capture_output=True, text=True, timeout=30)
        for line in out.stdout.splitlines():
            job_id, _, state = line.partition("|")
            # A requeued job has several records; the last line is the latest attempt.
            states[job_id.strip()] = state.strip()
    return states
