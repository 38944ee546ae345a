"""Which runs of a batch must not be submitted now, and the outcome that says why."""

from __future__ import annotations

from pathlib import Path

from sweep.contract import RUN, RunOutcomeState, Submission, lock_holder, read_json
from sweep.outcomes import RunOutcome, loss_text
from sweep.submission import completed_summary


def already_handled(run_dir: Path, run: str, expected_run_id: str | None, previous: Submission | None,
                    live: dict[str, str]) -> RunOutcome | None:
    """An outcome for a run that must not be submitted now, else None."""
    if previous is not None and previous.job_id in live:
        # first: whatever its dir holds, a job of this run is still queued or running (a config edited
        # since is not this job's: it runs the config frozen at its submission)
        return RunOutcome(run, RunOutcomeState.QUEUED, previous.job_id,
                          f"already in Slurm as job {previous.job_id} ({live[previous.job_id]})")
    run_id = (read_json(run_dir / RUN) or {}).get("run_id")
    if expected_run_id is not None and run_id is not None and run_id != expected_run_id:
        # Same directory, different experiment (conf/ changed, or a run.json copied from another run):
        # never overwrite it, and never let its numbers pass for this run's (gather refuses it too).
        return RunOutcome(run, RunOutcomeState.FAILED,
                          detail=f"its run.json holds run_id {run_id} but this job's "
                          f"config gives {expected_run_id}; to train it, move the dir aside "
                          f"(mv '{run_dir}' '{run_dir}.old') and run the same command again, or use a "
                          "new sweep.name")
    summary = completed_summary(run_dir)
    if summary is not None:
        return RunOutcome(run, RunOutcomeState.SKIPPED, detail=f"completed (run_id {run_id}, "
                                                 f"final_val_loss {loss_text(summary)})")
    holder = lock_holder(run_dir)
    if holder is not None:
        # another submitter's job (or a single run) is training this dir now: a second copy would
        # interleave its metrics and checkpoint; it fails fast on the lock anyway
        return RunOutcome(run, RunOutcomeState.BUSY,
                          detail=f"being trained by {holder} (another submitter?); not "
                          "submitted again: wait for it, or stop it and run the same command again")
    return None
