"""The outcome of every run of a sweep: what the launcher records, prints and hands back to the sweeper.

Each run ends with an outcome (done, failed, cancelled, skipped, queued, busy, submitted), appended to
`SWEEP_DIR/.bitlaw/outcomes.jsonl` as it ends; the sweep's callback (`SweepSummary`) prints one closing line
from this invocation's outcomes and sets the exit status.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from hydra.experimental.callback import Callback

from sweep.contract import OUTCOMES_FILE, SUMMARY, RunOutcomeState, SummaryStatus, ledger_dir, read_json


def record_outcome(sweep_dir: Path, outcome: RunOutcome) -> None:
    # by field, not asdict: asdict would deep-copy the run's JobReturn, which is not recorded anyway
    record = {f.name: getattr(outcome, f.name) for f in fields(outcome)
              if f.name not in ("value", "returned")}
    path = ledger_dir(sweep_dir) / OUTCOMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")


@dataclass
class RunOutcome:
    run: str
    state: RunOutcomeState
    job_id: str = ""
    detail: str = ""
    value: Any = None  # what the task returned (done runs), handed back to the sweeper
    returned: Any = None  # the done run's own JobReturn (its cfg, working dir): what the sweeper gets back


def log_tail(path: Path, n_lines: int = 5) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n_lines:])


def loss_text(summary: dict) -> str:
    loss = summary.get("final_val_loss")
    return f"{loss:.4f}" if isinstance(loss, float) else str(loss)


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def error_line(message: str) -> str:
    """The exception line of a traceback that submitit wrapped into FailedJobError."""
    lines = [ln for ln in message.splitlines() if ln and not ln.startswith((" ", "-", "You can check"))]
    return lines[-1] if lines else message.strip()


def job_return(overrides: list[str], outcome: RunOutcome | None) -> Any:
    """What the sweeper gets for a run: a done run's own JobReturn (as Hydra's launchers hand back), else
    status COMPLETED with no value: Hydra's sweepers raise on a FAILED return and would stop the sweep; the
    failure is reported in the outcome lines and the sweep's exit status instead."""
    from hydra.core.utils import JobReturn, JobStatus

    if outcome is not None and outcome.returned is not None:
        return outcome.returned
    value = outcome.value if outcome is not None else None
    return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=value)


def outcomes_since(sweep_dir: Path, offset: int) -> list[RunOutcome]:
    """The outcomes recorded in SWEEP_DIR/.bitlaw/outcomes.jsonl after byte `offset` (this invocation's)."""
    try:
        with open(ledger_dir(sweep_dir) / OUTCOMES_FILE, "rb") as f:
            f.seek(offset)
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []
    outcomes = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by a killed submitter
            continue
        fields = {k: str(record.get(k, "")) for k in ("run", "state", "job_id", "detail")}
        outcomes.append(RunOutcome(**fields))
    return outcomes


def outcomes_offset(sweep_dir: Path) -> int:
    """Where this invocation's outcomes will start in SWEEP_DIR/.bitlaw/outcomes.jsonl."""
    try:
        return (ledger_dir(sweep_dir) / OUTCOMES_FILE).stat().st_size
    except OSError:
        return 0


def closing_summary(outcomes: list[RunOutcome], sweep_dir: Path) -> tuple[str, int]:
    """(the sweep's one closing line, its exit status: 1 if any run failed or was cancelled)."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.state] = counts.get(outcome.state, 0) + 1
    totals = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    line = f"[sweep] {len(outcomes)} run(s): {totals or 'none'}  (sweep dir {sweep_dir})"
    if counts.get(RunOutcomeState.SUBMITTED):
        line += f"\n[sweep] detached; follow with: bitlaw status {sweep_dir}"
    return line, 1 if counts.get(RunOutcomeState.FAILED) or counts.get(RunOutcomeState.CANCELLED) else 0


class SweepSummary(Callback):
    """After a multirun: the sweep's one closing line (counts of this invocation's run outcomes, as the
    launcher recorded them), and exit status 1 if any run failed or was cancelled.

    A job that fails (bad config, an exception) records ``summary.json: failed`` and returns, so the other
    jobs of the sweep still run; this is where the sweep as a whole reports it.
    """

    def __init__(self) -> None:
        self.offset = 0

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.offset = outcomes_offset(Path(str(config.hydra.sweep.dir)).resolve())

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        outcomes = outcomes_since(sweep_dir, self.offset)
        line, status = closing_summary(outcomes, sweep_dir)
        print(line, flush=True)
        if status:
            bad = [o for o in outcomes if o.state in (RunOutcomeState.FAILED, RunOutcomeState.CANCELLED)]
            print(f"sweep: error: {len(bad)} run(s) failed or were cancelled, e.g. {bad[0].run}: "
                  f"{bad[0].detail}", file=sys.stderr, flush=True)
            sys.exit(status)


class JobFailed(Exception):
    """An ended job's run raised (or its process died): `line` says how, in one line."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class EndedJob(Protocol):
    """What the classifier needs of a job that has ended, whichever backend ran it (as submitit gives each
    executor the same Job): a local pool run (sweep/launch/jobs.py PoolRun) or a Slurm job (SlurmRun)."""

    run: str          # the run (its dir relative to the sweep dir)
    job_id: str       # the worker's pid, or the Slurm job id
    final_state: str  # RESULT when the job left a result; else the scheduler's final state

    def result(self) -> Any:
        """The run's JobReturn; raises JobFailed if the run raised or its process died."""

    def log_tail(self) -> str:
        """The last lines of the job's stderr, for a job that ended without a result."""


def classify(sweep_dir: Path, job: EndedJob) -> RunOutcome:
    """The one outcome classifier: the job's end, then the run dir's summary.json, decide."""
    from hydra.core.utils import JobStatus

    run, job_id = job.run, job.job_id
    if job.final_state != "RESULT":
        state = (RunOutcomeState.CANCELLED if job.final_state.startswith("CANCELLED")
             else RunOutcomeState.FAILED)
        return RunOutcome(run, state, job_id, f"job {job.final_state}; {job.log_tail()}")
    try:
        job_return = job.result()
    except JobFailed as failed:  # the job wrote its failed summary (ComposedJob) unless its process died
        summary = read_json(sweep_dir / run / SUMMARY) or {}
        return RunOutcome(run, RunOutcomeState.FAILED, job_id, summary.get("reason") or failed.line)
    if job_return.status == JobStatus.FAILED:
        return RunOutcome(run, RunOutcomeState.FAILED, job_id, "the task failed")
    value = job_return.return_value
    # a busy return: the job lost the run dir's lock (app.run_job)
    if isinstance(value, dict) and value.get("status") == RunOutcomeState.BUSY:
        return RunOutcome(run, RunOutcomeState.BUSY, job_id, str(value.get("reason")))
    summary = read_json(sweep_dir / run / SUMMARY) or {}
    if summary.get("status") == SummaryStatus.COMPLETED:
        return RunOutcome(run, RunOutcomeState.DONE, job_id, f"final_val_loss {loss_text(summary)}", value,
                          job_return)
    if summary:
        return RunOutcome(run, RunOutcomeState.FAILED, job_id,
                          f"{summary.get('status')}: {summary.get('reason')}")
    return RunOutcome(run, RunOutcomeState.DONE, job_id, "job returned (no summary.json)", value, job_return)
