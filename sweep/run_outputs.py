"""What a training job writes to its run dir on the main rank, besides the metrics log: checkpoints, each
branch's run dir when the branch ends, and the trunk's outputs (run.json with the export, summary.json) when
the run ends. ``RunOutputs`` is the loop's ``Hooks`` (sweep/loop.py); sweep/train.py builds it.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep import branches as branching
from sweep import checkpoint, export
from sweep.config import JobConfig
from sweep.contract import (
    CHECKPOINT,
    RUN,
    SUMMARY,
    Summary,
    SummaryStatus,
    TrainingEnd,
    atomic_write_json,
    compute_run_id,
    read_json,
    write_summary,
)
from sweep.loop import ModelParts, Outcome, Segment, branch_run_dir, final_loss
from sweep.rundir import write_config
from sweep.wandb_logger import WandbLogger

log = logging.getLogger("sweep.train")  # the job's log, as the rest of the job's lines


@dataclass
class RunOutputs:
    """What the run writes (on the main rank): checkpoints, each branch's run dir when the branch ends (the
    loop's Hooks), and the trunk's outputs when the run ends."""

    job: JobConfig
    run_dir: Path
    run_id: str
    run_info: dict[str, Any]
    parts: ModelParts
    counts: dict[str, int]
    plan: list[branching.Branch]
    progress: dict[str, Any]            # as restored (Start.progress); its evals are the trunk's
    trunk: Segment
    started: float
    is_main: bool

    def save_checkpoint(self, done: int, branch: dict | None) -> None:
        if self.is_main:
            wall = self.progress["wall_s"] + (time.time() - self.started)
            state = {**self.progress, "evals": self.trunk.evals, "wall_s": wall}
            if branch is not None:  # inside a branch: `done` is the branch's step, the trunk is at the fork
                state["branch"] = branch
            checkpoint.save(self.run_dir / CHECKPOINT, model=self.parts.model, optimizer=self.parts.optimizer,
                            run_id=self.run_id, step=done, progress=state)

    def on_stop(self, done: int, signum: int) -> None:
        log.warning("checkpointed at step %d after signal %s", done, signum)

    def write_branch(self, branch: branching.Branch, segment: Segment, outcome: Outcome,
                     wall_s: float) -> None:
        if not self.is_main:
            return
        job, t, q, run_id, run_info, counts = self.job, self.job.train, self.job.quant, self.run_id, \
            self.run_info, self.counts
        model, quantized = self.parts.model, self.parts.quantized
        branch_dir = branch_run_dir(self.run_dir, branch)
        config = branching.standalone_config(job.raw, branch)
        branch_id = compute_run_id(config)
        final, final_se, n_final = final_loss(segment.evals, segment.eval_at, t.final_evals)
        completed = outcome.status == TrainingEnd.COMPLETED
        info = {**run_info, "run_id": branch_id, "trunk": run_id, "branch": branch.name,
                "fork_step": branch.fork_step, "D": branch.steps * t.batch_tokens, "steps": branch.steps}
        for key in ("branches", "tokens_trained", "tokens_as_separate_runs"):
            info.pop(key, None)
        if completed:
            info["export"] = export.export(model, quantized, q, counts, branch_dir if t.save_export else None)
        write_config(branch_dir, config)
        atomic_write_json(branch_dir / RUN, info)
        write_summary(branch_dir, Summary(
            SummaryStatus(outcome.status), outcome.reason, final if completed else None,
            final_se if completed else None, n_final, tokens_seen=outcome.done * t.batch_tokens,
            wall_s=wall_s, steps=outcome.done, trunk=run_id, branch=branch.name))
        log.info("branch %s: %s, final_val_loss %s", branch.name, outcome.status, final)

    def write_trunk(self, outcome: Outcome, logger: WandbLogger | None) -> dict[str, Any]:
        """The run ended (completed or diverged): run.json with the export, summary.json, no checkpoint
        (unless kept); returns the summary with the run id."""
        t, q, run_id, run_dir, run_info, counts = self.job.train, self.job.quant, self.run_id, self.run_dir, \
            self.run_info, self.counts
        model, quantized, trunk, plan = self.parts.model, self.parts.quantized, self.trunk, self.plan
        status, reason, done = outcome.status, outcome.reason, outcome.done
        wall_s = self.progress["wall_s"] + (time.time() - self.started)
        final, final_se, n_final = final_loss(trunk.evals, trunk.eval_at, t.final_evals)
        completed = status == TrainingEnd.COMPLETED
        record = Summary(SummaryStatus(status), reason, final if completed else None,
                         final_se if completed else None, n_final, tokens_seen=done * t.batch_tokens,
                         wall_s=wall_s, steps=done)
        if plan:
            record.trunk = run_id
            record.branches = {b.name: (read_json(branch_run_dir(run_dir, b) / SUMMARY) or {}).get("status")
                               for b in plan}
        summary = record.to_json()
        if self.is_main:
            if completed:
                export_dir = run_dir if t.save_export else None
                run_info["export"] = export.export(model, quantized, q, counts, export_dir)
                atomic_write_json(run_dir / RUN, run_info)
            if completed and t.keep_checkpoint:
                # the final latent weights and optimizer, to continue training
                self.save_checkpoint(done, None)
            write_summary(run_dir, record)
            if not t.keep_checkpoint:
                # the run is final; a cluster-scale checkpoint (fp32 weights + Adam moments) is 16 bytes per
                # parameter, and export.pt already holds the weights as they would be stored
                shutil.rmtree(run_dir / CHECKPOINT, ignore_errors=True)
            if logger:
                logger.finish(summary, exit_code=0 if completed else 1)
        return {**summary, "run_id": run_id}
