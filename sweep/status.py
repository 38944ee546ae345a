"""Where every run of a sweep stands, from the sweep dir alone (what `bitlaw status SWEEP_DIR` prints).

Reads the run dirs (run.json, summary.json) and the submission ledger (`.bitlaw/jobs.jsonl`) of the run-dir
contract (sweep/contract/), and asks Slurm (`squeue`, then `sacct` for jobs that left the queue) about
runs that have no final summary. Torch-free.

States: done (summary completed) · failed (summary failed/diverged, or the job ended without one) ·
cancelled · running · pending · unknown (no summary and no scheduler record, e.g. an interrupted local run).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from sweep import contract
from sweep.contract import SLURM_PENDING, SLURM_RUNNING, Submission, SummaryStatus, lock_holder


class RunState(contract.Vocabulary):
    """Where a run stands, as `bitlaw status` says it (worked out from the run dir, the ledger and Slurm;
    never written to a file)."""

    DONE = "done"
    RUNNING = "running"
    PENDING = "pending"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


STATES = tuple(RunState)
_RUN_MARKERS = (contract.RUN, contract.SUMMARY, contract.CONFIG)
_LOG_TAIL_LINES = 3


@dataclass
class RunStatus:
    run: str
    state: RunState
    detail: str = ""
    job_id: str = ""
    slurm_state: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def sweep_status(sweep_dir: Path, query_slurm: bool = True) -> list[RunStatus]:
    """One RunStatus per run: every run dir, plus submitted runs whose dir does not exist yet."""
    ledger = contract.latest_submissions(sweep_dir)
    run_dirs = contract.walk_run_dirs(sweep_dir, _RUN_MARKERS, include_root=False)
    runs = sorted(set(ledger) | {str(d.relative_to(sweep_dir)) for d in run_dirs})
    if not runs and (sweep_dir / contract.RUN).is_file():
        runs = ["."]  # a single run's dir (python -m sweep, hydra.run.dir): the dir is the run
    for run in runs:
        # Sweeps launched with plain `python -m sweep -m hydra/launcher=slurm` have no ledger, but each
        # started job recorded its Slurm id in run.json.
        job_id = (contract.read_json(sweep_dir / run / contract.RUN) or {}).get("slurm_job_id")
        if run not in ledger and job_id:
            ledger[run] = Submission(run=run, job_id=str(job_id), executor="slurm", submitted="", stdout="",
                                     stderr="", config="")
    summaries = {run: contract.read_json(sweep_dir / run / contract.SUMMARY) for run in runs}
    open_jobs = [ledger[run].job_id for run in runs
                 if run in ledger and ledger[run].executor == "slurm"
                 and (summaries[run] or {}).get("status") not in tuple(SummaryStatus)]
    slurm = _slurm_states(open_jobs) if query_slurm and open_jobs else {}
    return [_run_status(sweep_dir, run, summaries[run], ledger.get(run), slurm) for run in runs]


def _run_status(sweep_dir: Path, run: str, summary: dict | None, submission: Submission | None,
                slurm: dict[str, str]) -> RunStatus:
    job_id = submission.job_id if submission else ""
    status = (summary or {}).get("status")
    if status == SummaryStatus.COMPLETED:
        return RunStatus(run, RunState.DONE, f"final_val_loss {summary.get('final_val_loss')}", job_id)
    if status in (SummaryStatus.FAILED, SummaryStatus.DIVERGED):
        log = f"; log: {_tail(sweep_dir / submission.stderr, _LOG_TAIL_LINES)}" if submission else ""
        return RunStatus(run, RunState.FAILED, f"{status}: {summary.get('reason')}{log}", job_id)
    holder = lock_holder(sweep_dir / run)
    if holder is not None:  # a live job holds the run dir, whoever submitted it
        return RunStatus(run, RunState.RUNNING, f"training: {holder}", job_id)
    if not submission:
        return RunStatus(run, RunState.UNKNOWN,
                         "no summary.json and no recorded job (interrupted local run?)")
    if submission.executor == "local":
        alive = _pid_alive(job_id)
        return RunStatus(run, RunState.RUNNING if alive else RunState.UNKNOWN,
                         "local process" if alive else "local job ended without summary.json", job_id)
    state = slurm.get(job_id, "")
    word = contract.slurm_state_word(state)
    if word in SLURM_PENDING:
        return RunStatus(run, RunState.PENDING, state, job_id, state)
    if word in SLURM_RUNNING:
        return RunStatus(run, RunState.RUNNING, state, job_id, state)
    log_tail = _tail(sweep_dir / submission.stderr, _LOG_TAIL_LINES)
    if word == "CANCELLED":
        return RunStatus(run, RunState.CANCELLED, state, job_id, state)
    if word:  # FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, COMPLETED without a summary, ...
        return RunStatus(run, RunState.FAILED, f"Slurm {state}; log: {log_tail}", job_id, state)
    return RunStatus(run, RunState.UNKNOWN, "Slurm has no record of this job", job_id)


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
