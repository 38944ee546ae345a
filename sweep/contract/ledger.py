"""A sweep dir's submission ledger (SWEEP_DIR/.bitlaw/) and the Slurm job states read with it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from sweep.contract.files import CONFIGS_DIR, JOBS_FILE, LEDGER_DIR, read_jsonl


# ----------------------------------------------------------------------------- the submission ledger
@dataclass
class Submission:
    """One line of SWEEP_DIR/.bitlaw/jobs.jsonl, appended at submission (the last line for a run wins).

    `run` is the run dir relative to the sweep dir; `job_id` a Slurm id (`123_4` for array task 4) or a
    local pid; `executor` slurm | local; `stdout`, `stderr` and `config` (the frozen composed config) are
    relative to the sweep dir.
    """

    run: str
    job_id: str
    executor: str
    submitted: str
    stdout: str
    stderr: str
    config: str
    overrides: list[str] = field(default_factory=list)


def ledger_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / LEDGER_DIR


def config_snapshot_path(sweep_dir: Path, run: str) -> Path:
    # override_dirname values may contain '/', e.g. data.path=/x/y.bin; keep one flat file per run
    return ledger_dir(sweep_dir) / CONFIGS_DIR / (run.replace(os.sep, "%2F") + ".yaml")


def append_submissions(sweep_dir: Path, submissions: Sequence[Submission]) -> None:
    """Append in one write, fsynced, so that a concurrent reader never sees half of a batch's lines."""
    path = ledger_dir(sweep_dir) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(asdict(s), sort_keys=True) + "\n" for s in submissions)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def latest_submissions(sweep_dir: Path) -> dict[str, Submission]:
    """run -> its most recent submission (a re-sweep re-submits failed runs; the newest line wins).
    Lines that are torn or lack a field are ignored."""
    records, _ = read_jsonl(ledger_dir(sweep_dir) / JOBS_FILE)
    names = {f.name for f in fields(Submission)}
    latest: dict[str, Submission] = {}
    for record in records:
        try:
            submission = Submission(**{k: v for k, v in record.items() if k in names})
        except TypeError:
            continue
        submission.job_id = str(submission.job_id)
        latest[submission.run] = submission
    return latest


# ----------------------------------------------------------------------------- Slurm job states
# Waiting for resources (squeue/sacct words).
SLURM_PENDING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED"})
# Holding resources. COMPLETING says only that the job is ending (sacct then says how).
SLURM_RUNNING = frozenset({"RUNNING", "COMPLETING", "RESIZING", "STAGE_OUT", "SIGNALING"})
# A job in one of these states still holds or waits for resources: re-submitting its run would duplicate it.
SLURM_LIVE = SLURM_PENDING | SLURM_RUNNING
# A job that may still produce a result: live, or in submitit's watcher states before the scheduler has a
# final word (READY, UNKNOWN) or about to be requeued (PREEMPTED).
SLURM_UNFINISHED = SLURM_LIVE | {"READY", "UNKNOWN", "PREEMPTED"}


def slurm_state_word(state: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED'."""
    return state.split()[0] if state.strip() else ""
