"""summary.json as a record: one shape for every writer."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sweep.contract.files import SUMMARY, atomic_write_json
from sweep.contract.states import SummaryStatus


@dataclass
class Summary:
    """summary.json: written last by whoever ends the run (sweep/train.py for a run and each of its branches;
    sweep/app.py and sweep/composed.py for a failure), read by gather, `bitlaw status` and the launcher.

    `to_json` leaves out the fields that are None, except `reason` and `final_val_loss` (always written) and
    `final_val_loss_se` (written with `final_evals`), so that a reader finds the keys each writer gave it.
    """

    status: SummaryStatus
    reason: str | None = None                # why it did not complete (None when completed)
    final_val_loss: float | None = None      # mean of the last `final_evals` evaluations, if completed
    final_val_loss_se: float | None = None   # its standard error; None unless completed
    final_evals: int | None = None           # evaluations averaged (None: the run never reached training)
    tokens_seen: int | None = None           # steps × train.batch_tokens
    wall_s: float | None = None              # training time over all attempts, in seconds
    steps: int | None = None                 # optimizer steps done
    trunk: str | None = None                 # a WSD trunk or branch: the trunk's run_id
    branch: str | None = None                # a branch: its name below RUN_DIR/branches/
    branches: dict[str, str | None] | None = None  # a trunk: each branch's name -> its summary's status
    traceback_tail: str | None = None        # a failure caught by the submitit task: its traceback's end
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a file this record does not know, kept

    def to_json(self) -> dict[str, Any]:
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        record["status"] = str(self.status)
        kept = {"status", "reason", "final_val_loss",
                *(("final_val_loss_se",) if self.final_evals is not None else ())}
        return {**self.extra, **{k: v for k, v in record.items() if v is not None or k in kept}}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Summary:
        """The record of a summary.json's object (ValueError if its status is not a SummaryStatus)."""
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in record.items() if k in names}
        known["status"] = SummaryStatus(record.get("status"))
        return cls(**known, extra={k: v for k, v in record.items() if k not in names})


def write_summary(run_dir: str | Path, summary: Summary) -> None:
    atomic_write_json(Path(run_dir) / SUMMARY, summary.to_json())
