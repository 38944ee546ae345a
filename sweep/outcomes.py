"""The outcome of every run of a sweep: what the launcher records, prints and hands back to the sweeper.

Each run ends with an outcome (done, failed, cancelled, skipped, queued, busy, submitted), appended to
`SWEEP_DIR/.bitlaw/outcomes.jsonl` as it ends; the sweep's callback (`SweepSummary`) prints one closing line
from this invocation's outcomes and sets the exit status.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from sweep.contract import OUTCOMES_FILE, SUMMARY, RunOutcomeState, ledger_dir, read_json


def record_outcome(sweep_dir: Path, outcome: RunOutcome) -> None:
    record = {k: v for k, v in asdict(outcome).items() if k != "value"}
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
    from hydra.core.utils import JobReturn, JobStatus

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
    if counts.get("submitted"):
        line += f"\n[sweep] detached; follow with: bitlaw status {sweep_dir}"
    return line, 1 if counts.get("failed") or counts.get("cancelled") else 0


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
            bad = [o for o in outcomes if o.state in ("failed", "cancelled")]
            print(f"sweep: error: {len(bad)} run(s) failed or were cancelled, e.g. {bad[0].run}: "
                  f"{bad[0].detail}", file=sys.stderr, flush=True)
            sys.exit(status)


def pool_outcome(sweep_dir: Path, finished: Any) -> RunOutcome:
    """A pooled run's outcome, read as `_outcome` reads a submitit job's (summary.json decides)."""
    from hydra.core.utils import JobStatus

    run_dir, job_id = sweep_dir / finished.key, str(finished.worker_pid)
    summary = read_json(run_dir / SUMMARY) or {}
    if not finished.ok:
        return RunOutcome(finished.key, "failed", job_id, summary.get("reason") or finished.error)
    job_return = finished.value
    if job_return.status == JobStatus.FAILED:
        return RunOutcome(finished.key, "failed", job_id, "the task failed")
    value = job_return.return_value
    if isinstance(value, dict) and value.get("status") == "busy":  # lost the run dir's lock (app.run_job)
        return RunOutcome(finished.key, "busy", job_id, str(value.get("reason")))
    if summary.get("status") == "completed":
        return RunOutcome(finished.key, "done", job_id, f"final_val_loss {loss_text(summary)}", value)
    if summary:
        return RunOutcome(finished.key, "failed", job_id, f"{summary.get('status')}: {summary.get('reason')}")
    return RunOutcome(finished.key, "done", job_id, "job returned (no summary.json)", value)


def local_final_state(job: Any) -> str | None:
    """'RESULT' once a local job left its result pickle, its submitit state if the process exited without
    one, None while it runs."""
    if job.paths.result_pickle.exists():
        return "RESULT"
    return job.state if job.done() else None


def job_outcome(sweep_dir: Path, run: str, job: Any, final_state: str) -> RunOutcome:
    from hydra.core.utils import JobStatus

    run_dir = sweep_dir / run
    if final_state != "RESULT":
        state = "cancelled" if final_state.startswith("CANCELLED") else "failed"
        return RunOutcome(run, state, job.job_id, f"job {final_state}; {log_tail(job.paths.stderr, 3)}")
    try:
        job_return = job.results()[0]
    except Exception as err:  # submitit re-raises the job's error; ComposedJob wrote its summary
        summary = read_json(run_dir / SUMMARY) or {}
        return RunOutcome(run, "failed", job.job_id, summary.get("reason") or error_line(str(err)))
    if job_return.status == JobStatus.FAILED:
        return RunOutcome(run, "failed", job.job_id, "the task failed")
    value = job_return.return_value
    if isinstance(value, dict) and value.get("status") == "busy":  # lost the run dir's lock (app.run_job)
        return RunOutcome(run, "busy", job.job_id, str(value.get("reason")))
    summary = read_json(run_dir / SUMMARY) or {}
    if summary.get("status") == "completed":
        return RunOutcome(run, "done", job.job_id, f"final_val_loss {loss_text(summary)}",
                          job_return.return_value)
    if summary:
        return RunOutcome(run, "failed", job.job_id, f"{summary.get('status')}: {summary.get('reason')}")
    return RunOutcome(run, "done", job.job_id, "job returned (no summary.json)")
