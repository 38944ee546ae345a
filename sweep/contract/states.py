"""The words of the protocol for how a run stands: summary statuses, how training ended, run outcomes."""

from __future__ import annotations

from enum import Enum


class Vocabulary(str, Enum):
    """A word of the protocol: a str, so it is its string in JSON, comparisons, dict keys, str() and
    f-strings (enum.StrEnum is 3.11+)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class SummaryStatus(Vocabulary):
    """summary.json's status. A run is done only when its summary says completed."""

    COMPLETED = "completed"  # trained to the end: final_val_loss is set
    DIVERGED = "diverged"    # train loss passed train.diverge_loss; final (training is deterministic)
    FAILED = "failed"        # a bad config or an exception; a re-submission runs it again


# A re-submission skips a run whose summary says one of these (a failed run runs again).
SKIPPED_STATUSES = (SummaryStatus.COMPLETED, SummaryStatus.DIVERGED)


class TrainingEnd(Vocabulary):
    """How the training loop ended (sweep.loop.Outcome): completed and diverged become the summary's status;
    stopped (train.max_steps_this_run) leaves a checkpoint and no summary."""

    COMPLETED = "completed"
    DIVERGED = "diverged"
    STOPPED = "stopped"


class RunOutcomeState(Vocabulary):
    """A run's outcome in one sweep invocation (SWEEP_DIR/.bitlaw/outcomes.jsonl, sweep/outcomes.py)."""

    DONE = "done"              # summary completed (or the task returned without one)
    FAILED = "failed"          # summary failed/diverged, the job failed, or the dir holds another run
    CANCELLED = "cancelled"    # Slurm cancelled the job
    SKIPPED = "skipped"        # already completed: not submitted again
    QUEUED = "queued"          # a job of this run is still in Slurm: not submitted again
    BUSY = "busy"              # a live job holds the run dir's lock
    SUBMITTED = "submitted"    # submitted and not waited for (a detached sweep)
