"""Small Slurm queries for the submitter: is the controller up, which jobs are still queued.

Only the submitting process uses these. Every call is a subprocess with a timeout, so a dead controller
turns into a clear error instead of a hang (sbatch itself retries for ~10 s before giving up).
"""

from __future__ import annotations

import shutil
import subprocess

from sweep.contract import SLURM_LIVE

SLURM_UP_HINT = "start a local cluster with `sudo scripts/slurm-up.sh`, or use hydra/launcher=local"


class SubmissionError(Exception):
    """A sweep cannot be submitted as asked; the message is one line and says what to change."""


def check_slurm_reachable(timeout_s: float = 10.0) -> None:
    """Raise SubmissionError unless sbatch exists and the controller answers `scontrol ping`."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        raise SubmissionError(f"hydra/launcher=slurm: Slurm is not installed here (no sbatch on PATH); "
                              f"{SLURM_UP_HINT}")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SubmissionError(f"hydra/launcher=slurm: the Slurm controller did not answer within "
                              f"{timeout_s:.0f} s; {SLURM_UP_HINT}") from None
    # `scontrol ping` prints "Slurmctld(primary) at vm is UP" and exits 0 only when the controller is up.
    if ping.returncode != 0 or " is UP" not in ping.stdout:
        said = (ping.stdout + ping.stderr).strip().splitlines()
        raise SubmissionError(f"hydra/launcher=slurm: the Slurm controller is not running "
                              f"({said[-1] if said else 'scontrol ping failed'}); {SLURM_UP_HINT}")


def active_slurm_states(job_ids: list[str]) -> dict[str, str]:
    """job id -> squeue state, for the given jobs that are still pending or running."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    # -r: one line per array task, printed as 123_4 like the ids submitit records (pending tasks would
    # otherwise be grouped as 123_[4-9]); -t all includes jobs that are just ending.
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, timeout=30)
    states: dict[str, str] = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.partition("|")
        if state in SLURM_LIVE:
            states[job_id.strip()] = state
    return states


def sbatch_error_line(message: str) -> str:
    """The informative line of an sbatch rejection that submitit wrapped into FailedJobError."""
    lines = [ln.strip() for ln in message.splitlines() if "error:" in ln]
    # sbatch prints the specific reason first ("Memory specification can not be satisfied") and a
    # generic "Batch job submission failed: ..." last; keep both, deduplicated, without the prefix.
    reasons = list(dict.fromkeys(ln.split("error:", 1)[1].strip() for ln in lines))
    return "; ".join(reasons) if reasons else message.strip().splitlines()[-1]
