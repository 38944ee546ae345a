"""The sweep's outcomes as they come: each recorded in SWEEP_DIR/.bitlaw/outcomes.jsonl and printed with the
sweep's progress ('12/54 · 42 left · 2m10s elapsed · ETA 7m35s')."""

from __future__ import annotations

import time
from pathlib import Path

from sweep.outcomes import RunOutcome, duration, record_outcome


class SweepProgress:
    """This invocation's run outcomes, in the order they were accounted for."""

    def __init__(self, sweep_dir: Path, total_jobs: int) -> None:
        self.sweep_dir = sweep_dir
        self.total_jobs = total_jobs
        self.outcomes: list[RunOutcome] = []
        self.started = time.monotonic()
        self.trained = 0  # runs that ended in this invocation (skipped ones are left out of the ETA)

    def line(self) -> str:
        """'12/54 · 42 left · 2m10s elapsed · ETA 7m35s': runs accounted for so far, for the user."""
        done = len(self.outcomes)
        elapsed = time.monotonic() - self.started
        left = max(self.total_jobs - done, 0)
        eta = f" · ETA {duration(elapsed / self.trained * left)}" if self.trained and left else ""
        return f"{done}/{self.total_jobs} · {left} left · {duration(elapsed)} elapsed{eta}"

    def keep(self, outcome: RunOutcome) -> None:
        """Record an outcome (a skipped, cancelled or submitted run: no line of its own here)."""
        self.outcomes.append(outcome)
        record_outcome(self.sweep_dir, outcome)

    def ended(self, outcome: RunOutcome) -> None:
        """A run that ended in this invocation: recorded, and printed with the sweep's progress."""
        self.keep(outcome)
        self.trained += 1
        print(f"[sweep] {outcome.state:9s} {outcome.run}  {outcome.detail}  [{self.line()}]", flush=True)

    def by_run(self) -> dict[str, RunOutcome]:
        return {o.run: o for o in self.outcomes}
