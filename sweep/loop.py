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
from typing import Any

import torch
import torch.nn.functional as F

from sweep import branches as branching
from sweep import checkpoint, data, distributed, meters, quant, quant_batch
from sweep.contract import CHECKPOINT, METRICS, SUMMARY, read_json
from sweep.rundir import MetricsLog


def steps_from(value: float, total: int) -> int:
    """A config value that is a fraction of the run (< 1) or a step count (>= 1)."""
    return int(round(value * total)) if value < 1 else int(value)


def evaluation_steps(total: int, cfg: Any) -> set[int]:
    """Steps (1-based, after the update) with a validation pass: every ``eval_every`` for the curve, plus
    the final ``final_evals`` steps spaced ``final_eval_spacing`` apart, whose mean is the final loss (the
    tail of the schedule, where the loss is flat, rather than points spread over the last 20 % of the run).
    """
    every = max(1, steps_from(cfg.eval_every, total))
    return set(range(every, total + 1, every)) | final_evaluation_steps(total, cfg)


def final_evaluation_steps(total: int, cfg: Any) -> set[int]:
    gap = max(1, steps_from(cfg.final_eval_spacing, total))
    return {total - i * gap for i in range(cfg.final_evals) if total - i * gap >= 1}


def learning_rate(step: int, total: int, warmup: int, cfg: Any) -> float:
    if cfg.schedule == "wsd":
        return branching.wsd_learning_rate(step, total, warmup, cfg.lr, cfg.min_lr_ratio, cfg.decay_fraction)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    floor = cfg.lr * cfg.min_lr_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: tuple[torch.Tensor, torch.Tensor], device: torch.device,
             autocast: Any, batch: int) -> tuple[float, float]:
    """(mean loss per token, its standard error over the validation sequences)."""
    model.eval()
    inputs, targets = val
    per_sequence = []
    for start in range(0, len(inputs), batch):
        x, y = inputs[start: start + batch].to(device), targets[start: start + batch].to(device)
        with autocast():
            logits = model(x)  # (b, T, vocab)
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
        per_sequence.append(losses.view(len(x), -1).mean(dim=1).double())  # (b,)
    model.train()
    values = torch.cat(per_sequence)
    se = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def forward_backward(trainable: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, micro: int,
                     autocast: Any) -> torch.Tensor:
    """Accumulate the gradient of the mean loss over this rank's batch, `micro` sequences at a time.

    DDP all-reduces only on the last micro-batch (``no_sync`` before), once per optimizer step. Returns the
    batch loss as a 0-d tensor on the device: reading it is a host-device sync, left to the log steps.
    """
    # x, y: (B_local, T)
    starts = list(range(0, len(x), micro))
    total = torch.zeros((), device=x.device)
    for index, start in enumerate(starts):
        xb, yb = x[start: start + micro], y[start: start + micro]
        last = index == len(starts) - 1
        sync = contextlib.nullcontext() if last or not hasattr(trainable, "no_sync") else trainable.no_sync()
        with sync:
            with autocast():
                logits = trainable(xb)  # (b, T, vocab)
            loss = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten()) * (len(xb) / len(x))
            loss.backward()
        total += loss.detach()
    return total


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
    status: str                     # completed | diverged | stopped
    done: int                       # steps done when it ended
    reason: str | None = None


class Trainer:
    """The state of one job's training (built by sweep.train) and the loop over its segments."""

    def __init__(self, *, job: Any, run_dir: Path, run_id: str, model: torch.nn.Module, trainable: Any,
                 optimizer: torch.optim.Optimizer, quantized: list, corpus: Any, val: tuple, final_val: tuple,
                 device: torch.device, dist_info: Any, autocast: Any, total_steps: int, warmup: int,
                 qat_step: int | None, n_sequences: int, micro_sequences: int, plan: list, logger: Any,
                 started: float, stop: Any, hooks: Any, meter: Any = None) -> None:
        self.job, self.run_dir, self.run_id = job, run_dir, run_id
        self.model, self.trainable, self.optimizer, self.quantized = model, trainable, optimizer, quantized
        self.corpus, self.val, self.final_val = corpus, val, final_val
        self.device, self.dist, self.autocast = device, dist_info, autocast
        self.total_steps, self.warmup, self.qat_step = total_steps, warmup, qat_step
        self.n_sequences, self.micro = n_sequences, micro_sequences
        self.plan, self.logger, self.started, self.stop = plan, logger, started, stop
        self.hooks = hooks  # save_checkpoint(done, extra), write_branch(branch, segment, outcome, wall_s)
        self.meter = meter or meters.Meter(None, device)  # MFU, grad norm, peak memory at log steps
        t = job.train
        self.diverge_loss = t.diverge_loss or 1.5 * math.log(job.model.vocab_size)
        self.steps_this_run = 0
        self.last_checkpoint_time = time.time()
        self.trunk_state: dict | None = None      # the trunk's snapshot while a branch trains
        self.branch_segment: Segment | None = None
        self.branch_began = 0.0

    # ------------------------------------------------------------------ the segments
    def run(self, trunk: Segment, start_step: int, resume_branch: dict | None) -> Outcome:
        """Train the trunk from `start_step`, forking every branch at its step; a checkpoint taken inside
        a branch (`resume_branch`) is finished first."""
        if resume_branch is not None:
            branch = next(b for b in self.plan if b.name == resume_branch["name"])
            outcome = self._branch(branch, trunk, resume_branch)
            if outcome.status == "stopped":
                return outcome
            start_step = branch.fork_step
        step = start_step
        for branch in self.plan:
            if branch.fork_step < step or self._branch_finished(branch):
                continue
            outcome = self._steps(trunk, step, branch.fork_step)
            if outcome.status != "completed":
                return outcome
            step = branch.fork_step
            outcome = self._branch(branch, trunk, None)
            if outcome.status == "stopped":
                return outcome
        return self._steps(trunk, step, self.total_steps)

    def _branch_finished(self, branch: branching.Branch) -> bool:
        summary = read_json(self.branch_dir(branch) / SUMMARY) or {}
        return summary.get("status") in ("completed", "diverged")

    def branch_dir(self, branch: branching.Branch) -> Path:
        return self.run_dir / branching.BRANCHES_DIR / branch.name

    def _branch(self, branch: branching.Branch, trunk: Segment, resume: dict | None) -> Outcome:
        t = self.job.train
        metrics = MetricsLog(self.branch_dir(branch) / METRICS)
        if resume is None:
            self.trunk_state = {"model": copy.deepcopy(self.model.state_dict()),
                                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                                "rng": checkpoint.rng_state(), "evals": copy.deepcopy(trunk.evals)}
            evals = [e for e in trunk.evals if e[0] <= branch.fork_step]
            start, wall_before = branch.fork_step, 0.0
            if self.dist.is_main:
                self.branch_dir(branch).mkdir(parents=True, exist_ok=True)
                history = [r for r in trunk.metrics.read() if r.get("step", 0) <= branch.fork_step]
                metrics.path.write_text("")
                for record in history:
                    metrics.append(record)
        else:
            self.trunk_state, evals = resume["trunk_state"], resume["evals"]
            start, wall_before = resume["step"], resume["wall_s"]
            if self.dist.is_main:
                metrics.truncate_after(start)
        segment = Segment(branch.steps, evaluation_steps(branch.steps, t), metrics, evals, branch)
        self.branch_segment = segment
        self.branch_began = time.time() - wall_before
        outcome = self._steps(segment, start, branch.steps)
        if outcome.status == "stopped":
            return outcome
        self.hooks.write_branch(branch, segment, outcome, time.time() - self.branch_began)
        # back to the trunk exactly as it was at the fork
        self.model.load_state_dict(self.trunk_state["model"])
        self.optimizer.load_state_dict(self.trunk_state["optimizer"])
        checkpoint.set_rng_state(self.trunk_state["rng"])
        trunk.evals[:] = self.trunk_state["evals"]
        self.trunk_state, self.branch_segment = None, None
        return Outcome("completed", branch.fork_step)

    def branch_checkpoint(self, done: int) -> dict | None:
        """What a checkpoint taken now must add so a resumed job can finish the branch, then the trunk."""
        if self.branch_segment is None:
            return None
        segment = self.branch_segment
        return {"name": segment.branch.name, "step": done, "trunk_state": self.trunk_state,
                "evals": segment.evals, "wall_s": time.time() - self.branch_began}

    # ------------------------------------------------------------------ the steps
    def _steps(self, segment: Segment, first: int, last: int) -> Outcome:
        """Steps first..last-1 (0-based) under `segment`'s schedule, with evaluation, logging, divergence,
        checkpoints and stop signals."""
        q, t = self.job.quant, self.job.train
        interval_train_s, interval_tokens = 0.0, 0
        finals = final_evaluation_steps(segment.total, t)
        for step in range(first, last):
            step_started = time.time()
            if self.qat_step is not None and step == self.qat_step:
                quant.switch_on(self.quantized, q, t.seed)
            elif self.qat_step is not None and q.refresh_every and step > self.qat_step \
                    and (step - self.qat_step) % q.refresh_every == 0:
                quant.refresh(self.quantized, q, t.seed)
            lr = learning_rate(step, segment.total, self.warmup, t)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x, y = data.train_batch(self.corpus, t.seed, step, self.n_sequences, t.seq_len, self.dist.rank,
                                    self.dist.world_size)
            quant_batch.update(self.quantized)  # quantize once per optimizer step, for every micro-batch
            local_loss = forward_backward(self.trainable, x.to(self.device), y.to(self.device), self.micro,
                                          self.autocast)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

            done = step + 1
            self.steps_this_run += 1
            interval_tokens += t.batch_tokens
            evaluate_now = done in segment.eval_at
            log_now = done % t.log_every == 0 or evaluate_now
            # A divergence check reads the loss: free on CPU (no device to wait for), so every step there
            # as before; on CUDA it is a sync, so at log steps and the segment's end (a NaN stays a NaN).
            check_now = log_now or done == last or self.device.type == "cpu"
            status, reason, train_loss = "completed", None, math.nan
            if check_now:
                train_loss = distributed.all_reduce_mean(local_loss, self.dist, self.device)
                if not math.isfinite(train_loss) or train_loss > self.diverge_loss:
                    status = "diverged"
                    reason = f"train loss {train_loss:.4g} at step {done} (limit {self.diverge_loss:.3g})"
            record: dict[str, Any] = {"step": done, "tokens": done * t.batch_tokens, "train_loss": train_loss,
                                      "lr": lr, "phase": "qat" if self.qat_step is not None
                                      and step >= self.qat_step else "warmup"}
            interval_train_s += time.time() - step_started
            if evaluate_now and status == "completed":
                quant_batch.update(self.quantized)  # the step changed the weights; compiled code cannot check
                # mid-run evaluations use the cheap subset; the final ones the whole validation set
                val = self.final_val if done in finals else self.val
                val_loss, val_se = evaluate(self.model, val, self.device, self.autocast, self.micro)
                record["val_loss"] = val_loss
                record["val_loss_se"] = val_se
                segment.evals.append([done, val_loss, val_se])
            if log_now or status != "completed":
                # training throughput: update steps only, evaluation time excluded
                tokens_per_s = interval_tokens / max(interval_train_s, 1e-9)
                record["tokens_per_s"] = tokens_per_s
                record.update(self.meter.log_fields(tokens_per_s, grad_norm))
                interval_train_s, interval_tokens = 0.0, 0
                if self.dist.is_main:
                    segment.metrics.append(record)
                    if self.logger and segment.branch is None:
                        self.logger.log(record, step=done)
            if status != "completed":
                return Outcome(status, done, reason)

            # a stop flag from any rank is a collective (and a sync): every step alone, at log steps in DDP
            stop_now = (not self.dist.enabled or log_now) and distributed.any_rank(
                self.stop.received is not None, self.dist, self.device)
            limit_reached = t.max_steps_this_run is not None and self.steps_this_run >= t.max_steps_this_run \
                and done < segment.total
            periodic = (t.checkpoint_every and done % t.checkpoint_every == 0) or \
                (time.time() - self.last_checkpoint_time >= t.checkpoint_every_s)
            if (stop_now or limit_reached or periodic) and done < segment.total:
                self.hooks.save_checkpoint(done, self.branch_checkpoint(done))
                self.last_checkpoint_time = time.time()
            if stop_now and self.stop.received is not None:
                self.hooks.on_stop(done)
                self.stop.hand_over()
            if limit_reached:
                return Outcome("stopped", done)
        return Outcome("completed", last)


def final_loss(evals: list, eval_at: set[int], k: int) -> tuple[float | None, float | None, int]:
    """(mean of the last k evaluations at the segment's own steps, the mean of their standard errors, k)."""
    own = [e for e in evals if e[0] in eval_at][-k:]
    if not own:
        return None, None, 0
    ses = [e[2] for e in own if len(e) > 2 and e[2] is not None and math.isfinite(e[2])]
    return sum(e[1] for e in own) / len(own), (sum(ses) / len(ses) if ses else None), len(own)


def checkpoint_exists(run_dir: Path) -> bool:
    return checkpoint.exists(run_dir / CHECKPOINT)
