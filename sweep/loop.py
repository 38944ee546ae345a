"""The training loop of one job: the trunk's steps, and its WSD cooldown branches (sweep/branches.py).

`Trainer.run()` trains the trunk from `start_step` to its end. Before the step where a branch forks it
snapshots the trunk (weights with the quantizer buffers, optimizer, RNG), trains the branch's decay with the
branch's own schedule and evaluation steps, writes the branch's run dir (RUN_DIR/branches/D=<D>/), restores
the snapshot and goes on. A checkpoint taken inside a branch carries the trunk snapshot, so a requeued job
finishes the branch and then the trunk, as an uninterrupted job would.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from sweep import branches as branching
from sweep import checkpoint, data, distributed, meters, quant, quant_batch, schedule
from sweep.config import JobConfig
from sweep.contract import (
    BRANCHES_DIR,
    CHECKPOINT,
    METRICS,
    SKIPPED_STATUSES,
    SUMMARY,
    TrainingEnd,
    read_json,
)
from sweep.rundir import MetricsLog
from sweep.step import evaluate, forward_backward, host_copy

__all__ = ["evaluate", "forward_backward", "host_copy"]  # the step's pieces, imported from here too

if TYPE_CHECKING:
    from sweep.wandb_logger import WandbLogger


@dataclass
class Segment:
    """A stretch of steps under one schedule: the trunk, or one branch's decay."""

    total: int                      # steps of the run whose schedule this is
    eval_at: set[int]
    metrics: MetricsLog
    evals: list = field(default_factory=list)     # [[step, val_loss, se], ...]
    branch: branching.Branch | None = None


@dataclass
class Outcome:
    status: TrainingEnd
    done: int                       # steps done when it ended
    reason: str | None = None


@dataclass(frozen=True)
class Validation:
    mid: tuple[torch.Tensor, torch.Tensor]    # a fixed subset, for the mid-run curve (cheap)
    final: tuple[torch.Tensor, torch.Tensor]  # the whole set, for the evaluations the final loss averages


@dataclass(frozen=True)
class TrainerConfig:
    """What the loop reads and never changes, built in one place (sweep.train.trainer_config)."""

    job: JobConfig
    run_dir: Path
    device: torch.device
    dist: distributed.DistInfo
    steps: schedule.StepPlan
    plan: list[branching.Branch]    # the WSD cooldown branches, sorted by fork step
    corpus: data.Corpus
    validation: Validation
    stop_group: Any = None          # the per-step stop flag's gloo group under NCCL (distributed.flag_group)


@dataclass
class ModelParts:
    """What the steps update: the model, how it is trained, and its quantized linears."""

    model: torch.nn.Module          # the plain model: state dicts, evaluation, gradient clipping
    trainable: torch.nn.Module      # what forward/backward runs: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    quantized: list[tuple[str, quant.QuantLinear]]


class Hooks(Protocol):
    """What the loop hands back to its job (sweep.run_outputs.RunOutputs writes the run dir)."""

    def save_checkpoint(self, done: int, branch: dict | None) -> None:
        """A checkpoint at `done` steps; `branch`: Trainer.branch_checkpoint(), when inside a branch."""

    def write_branch(self, branch: branching.Branch, segment: Segment, outcome: Outcome,
                     wall_s: float) -> None:
        """A branch ended (completed or diverged): its run dir."""

    def on_stop(self, done: int, signum: int) -> None:
        """A stop signal arrived and the checkpoint at `done` is written."""


class StopFlag(Protocol):
    """A stop signal seen at step boundaries (sweep.train.StopSignals)."""

    received: int | None

    def hand_over(self) -> None:
        """After the checkpoint: let the signal take its course (requeue or exit)."""


def branch_run_dir(run_dir: Path, branch: branching.Branch) -> Path:
    """A branch's own run dir, inside its trunk's."""
    return run_dir / BRANCHES_DIR / branch.name


class Throughput:
    """Training seconds and tokens since the last log step (update steps only, evaluation excluded)."""

    def __init__(self) -> None:
        self.train_s, self.tokens = 0.0, 0

    def take(self) -> float:
        """Tokens per second since the last call; starts the next interval."""
        tokens_per_s = self.tokens / max(self.train_s, 1e-9)
        self.train_s, self.tokens = 0.0, 0
        return tokens_per_s


class Trainer:
    """The state of one job's training (built by sweep.train) and the loop over its segments."""

    def __init__(self, config: TrainerConfig, parts: ModelParts, hooks: Hooks, stop: StopFlag,
                 logger: WandbLogger | None = None, meter: meters.Meter | None = None) -> None:
        self.config, self.parts, self.hooks, self.stop, self.logger = config, parts, hooks, stop, logger
        self.meter = meter or meters.Meter(None, config.device)  # MFU, grad norm, peak memory at log steps
        job = config.job
        self.diverge_loss = job.train.diverge_loss or 1.5 * math.log(job.model.vocab_size)
        self.steps_this_run = 0
        self.last_checkpoint_time = time.time()
        self.trunk_state: dict | None = None      # the trunk's snapshot while a branch trains
        self.branch_segment: Segment | None = None
        self.branch_began = 0.0

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; full precision on CPU."""
        if self.config.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ the segments
    def run(self, trunk: Segment, start_step: int, resume_branch: dict | None) -> Outcome:
        """Train the trunk from `start_step`, forking every branch at its step; a checkpoint taken inside
        a branch (`resume_branch`) is finished first."""
        plan = self.config.plan
        if resume_branch is not None:
            branch = next(b for b in plan if b.name == resume_branch["name"])
            outcome = self._branch(branch, trunk, resume_branch)
            if outcome.status == TrainingEnd.STOPPED:
                return outcome
            start_step = branch.fork_step
        step = start_step
        for branch in plan:
            if branch.fork_step < step or self._branch_finished(branch):
                continue
            outcome = self._steps(trunk, step, branch.fork_step)
            if outcome.status != TrainingEnd.COMPLETED:
                return outcome
            step = branch.fork_step
            outcome = self._branch(branch, trunk, None)
            if outcome.status == TrainingEnd.STOPPED:
                return outcome
        return self._steps(trunk, step, self.config.steps.total)

    def _branch_finished(self, branch: branching.Branch) -> bool:
        summary = read_json(branch_run_dir(self.config.run_dir, branch) / SUMMARY) or {}
        return summary.get("status") in SKIPPED_STATUSES

    def _branch(self, branch: branching.Branch, trunk: Segment, resume: dict | None) -> Outcome:
        t, is_main = self.config.job.train, self.config.dist.is_main
        model, optimizer = self.parts.model, self.parts.optimizer
        directory = branch_run_dir(self.config.run_dir, branch)
        metrics = MetricsLog(directory / METRICS)
        if resume is None:
            self.trunk_state = {"model": host_copy(model.state_dict()),
                                "optimizer": host_copy(optimizer.state_dict()),
                                "rng": checkpoint.rng_state(), "evals": copy.deepcopy(trunk.evals)}
            evals = [e for e in trunk.evals if e[0] <= branch.fork_step]
            start, wall_before = branch.fork_step, 0.0
            if is_main:
                directory.mkdir(parents=True, exist_ok=True)
                history = [r for r in trunk.metrics.read() if r.get("step", 0) <= branch.fork_step]
                metrics.path.write_text("")
                for record in history:
                    metrics.append(record)
        else:
            self.trunk_state, evals = resume["trunk_state"], resume["evals"]
            start, wall_before = resume["step"], resume["wall_s"]
            if is_main:
                metrics.truncate_after(start)
        segment = Segment(branch.steps, schedule.evaluation_steps(branch.steps, t), metrics, evals, branch)
        self.branch_segment = segment
        self.branch_began = time.time() - wall_before
        outcome = self._steps(segment, start, branch.steps)
        if outcome.status == TrainingEnd.STOPPED:
            return outcome
        self.hooks.write_branch(branch, segment, outcome, time.time() - self.branch_began)
        # back to the trunk exactly as it was at the fork
        model.load_state_dict(self.trunk_state["model"])
        optimizer.load_state_dict(self.trunk_state["optimizer"])
        checkpoint.set_rng_state(self.trunk_state["rng"])
        trunk.evals[:] = self.trunk_state["evals"]
        self.trunk_state, self.branch_segment = None, None
        return Outcome(TrainingEnd.COMPLETED, branch.fork_step)

    def branch_checkpoint(self, done: int) -> dict | None:
        """What a checkpoint taken now must add so a resumed job can finish the branch, then the trunk
        (``trunk_step``: the trunk is at the fork, where its metrics log ends)."""
        if self.branch_segment is None:
            return None
        segment = self.branch_segment
        return {"name": segment.branch.name, "step": done, "trunk_state": self.trunk_state,
                "evals": segment.evals, "wall_s": time.time() - self.branch_began,
                "trunk_step": segment.branch.fork_step}

    # ------------------------------------------------------------------ the steps
    def _steps(self, segment: Segment, first: int, last: int) -> Outcome:
        """Steps first..last-1 (0-based) under `segment`'s schedule, with evaluation, logging, divergence,
        checkpoints and stop signals."""
        t = self.config.job.train
        throughput = Throughput()
        finals = schedule.final_evaluation_steps(segment.total, t)
        for step in range(first, last):
            step_started = time.time()
            self._schedule_quantizers(step)
            lr = schedule.learning_rate(step, segment.total, self.config.steps.warmup, t)
            local_loss, grad_norm = self._update(step, lr)

            done = step + 1
            self.steps_this_run += 1
            throughput.tokens += t.batch_tokens
            evaluate_now = done in segment.eval_at
            log_now = done % t.log_every == 0 or evaluate_now
            # A divergence check reads the loss: free on CPU (no device to wait for), so every step there
            # as before; on CUDA it is a sync, so at log steps and the segment's end (a NaN stays a NaN).
            check_now = log_now or done == last or self.config.device.type == "cpu"
            status, reason, train_loss = TrainingEnd.COMPLETED, None, math.nan
            if check_now:
                status, reason, train_loss = self._check_divergence(local_loss, done)
            record = self._record(step, lr, train_loss)
            throughput.train_s += time.time() - step_started
            if evaluate_now and status == TrainingEnd.COMPLETED:
                self._evaluate(segment, record, final=done in finals)
            if log_now or status != TrainingEnd.COMPLETED:
                self._log(segment, record, throughput.take(), grad_norm)
            if status != TrainingEnd.COMPLETED:
                return Outcome(status, done, reason)
            if self._checkpoint_and_stop(segment, done):
                return Outcome(TrainingEnd.STOPPED, done)
        return Outcome(TrainingEnd.COMPLETED, last)

    def _schedule_quantizers(self, step: int) -> None:
        """The QAT switch at its step (codebooks fitted then); k-means re-fits every ``refresh_every``."""
        q, seed, qat_step = self.config.job.quant, self.config.job.train.seed, self.config.steps.qat_step
        if qat_step is not None and step == qat_step:
            quant.switch_on(self.parts.quantized, q, seed)
        elif qat_step is not None and q.refresh_every and step > qat_step \
                and (step - qat_step) % q.refresh_every == 0:
            quant.refresh(self.parts.quantized, q, seed)

    def _update(self, step: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step at `lr` on this rank's share of the step's batch: (the batch loss as a 0-d
        device tensor, the gradient norm before clipping)."""
        t, dist, device, parts = self.config.job.train, self.config.dist, self.config.device, self.parts
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
        x, y = data.train_batch(self.config.corpus, t.seed, step, self.config.steps.n_sequences, t.seq_len,
                                dist.rank, dist.world_size)
        quant_batch.update(parts.quantized)  # quantize once per optimizer step, for every micro-batch
        local_loss = forward_backward(parts.trainable, data.to_device(x, device), data.to_device(y, device),
                                      self.config.steps.micro_sequences, self.autocast,
                                      chunked_loss=device.type == "cuda")
        grad_norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), t.grad_clip)
        parts.optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
        return local_loss, grad_norm

    def _check_divergence(self, local_loss: torch.Tensor, done: int) -> tuple[str, str | None, float]:
        """(status, reason, the loss averaged over ranks): diverged on a non-finite or too high loss."""
        train_loss = distributed.all_reduce_mean(local_loss, self.config.dist, self.config.device)
        if not math.isfinite(train_loss) or train_loss > self.diverge_loss:
            reason = f"train loss {train_loss:.4g} at step {done} (limit {self.diverge_loss:.3g})"
            return TrainingEnd.DIVERGED, reason, train_loss
        return TrainingEnd.COMPLETED, None, train_loss

    def _record(self, step: int, lr: float, train_loss: float) -> dict[str, Any]:
        """The step's metrics line (evaluation and throughput fields are added to it)."""
        qat_step, done = self.config.steps.qat_step, step + 1
        return {"step": done, "tokens": done * self.config.job.train.batch_tokens, "train_loss": train_loss,
                "lr": lr, "phase": "qat" if qat_step is not None and step >= qat_step else "warmup"}

    def _evaluate(self, segment: Segment, record: dict[str, Any], final: bool) -> None:
        quant_batch.update(self.parts.quantized)  # the step changed the weights; compiled code cannot check
        # mid-run evaluations use the cheap subset; the final ones the whole validation set
        val = self.config.validation.final if final else self.config.validation.mid
        val_loss, val_se = evaluate(self.parts.model, val, self.config.device, self.autocast,
                                    self.config.steps.micro_sequences, self.config.dist)
        record["val_loss"] = val_loss
        record["val_loss_se"] = val_se
        segment.evals.append([record["step"], val_loss, val_se])

    def _log(self, segment: Segment, record: dict[str, Any], tokens_per_s: float,
             grad_norm: torch.Tensor) -> None:
        # training throughput: update steps only, evaluation time excluded
        record["tokens_per_s"] = tokens_per_s
        record.update(self.meter.log_fields(tokens_per_s, grad_norm))
        if self.config.dist.is_main:
            segment.metrics.append(record)
            if self.logger and segment.branch is None:
                self.logger.log(record, step=record["step"])

    def stop_requested(self) -> bool:
        """Whether any rank has a stop signal, polled every step: under DDP all ranks agree through one
        all-reduce of the flag, on the CPU (gloo) group so that it never waits for the GPU (~0.1 ms per
        step on CPU gloo; docs/architecture.md §3). Polled at log steps only, a stop could come ~55 s late
        at l1b, and the save after it must fit in the launcher's signal_delay_s."""
        dist, group = self.config.dist, self.config.stop_group
        device = torch.device("cpu") if group is not None else self.config.device
        return distributed.any_rank(self.stop.received is not None, dist, device, group)

    def _checkpoint_and_stop(self, segment: Segment, done: int) -> bool:
        """Checkpoint on a stop signal, at this run's step limit or periodically; hand a stop signal over.
        True when this run's step limit (``train.max_steps_this_run``) is reached."""
        t = self.config.job.train
        stop_now = self.stop_requested()
        limit_reached = t.max_steps_this_run is not None and self.steps_this_run >= t.max_steps_this_run \
            and done < segment.total
        periodic = (t.checkpoint_every and done % t.checkpoint_every == 0) or \
            (time.time() - self.last_checkpoint_time >= t.checkpoint_every_s)
        if (stop_now or limit_reached or periodic) and done < segment.total:
            self.hooks.save_checkpoint(done, self.branch_checkpoint(done))
            self.last_checkpoint_time = time.time()
        if stop_now and self.stop.received is not None:
            self.hooks.on_stop(done, self.stop.received)
            self.stop.hand_over()
        return limit_reached


def final_loss(evals: list, eval_at: set[int], k: int) -> tuple[float | None, float | None, int]:
    """(mean of the last k evaluations at the segment's own steps, the mean of their standard errors, k)."""
    own = [e for e in evals if e[0] in eval_at][-k:]
    if not own:
        return None, None, 0
    ses = [e[2] for e in own if len(e) > 2 and e[2] is not None and math.isfinite(e[2])]
    return sum(e[1] for e in own) / len(own), (sum(ses) / len(ses) if ses else None), len(own)


def checkpoint_exists(run_dir: Path) -> bool:
    return checkpoint.exists(run_dir / CHECKPOINT)
