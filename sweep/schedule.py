"""The job's schedule in steps: how many, the warmup, the QAT switch, the evaluation steps, the learning rate.

Config values for steps are a fraction of the run (< 1) or a step count (>= 1); ``plan_steps`` turns the
job's config into a ``StepPlan`` once, with the checks that need the run's length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sweep import branches as branching
from sweep.config import ConfigError, JobConfig


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


@dataclass(frozen=True)
class StepPlan:
    """The job's step counts and batch split, derived once from its config (plan_steps)."""

    total: int                      # optimizer steps of the trunk
    warmup: int                     # steps of linear warmup
    qat_step: int | None            # the step that switches QAT on; None: no quantization
    n_sequences: int                # sequences per optimizer step, all ranks together
    micro_sequences: int            # sequences per forward/backward on one rank


def plan_steps(job: JobConfig, n_quant: int, world_size: int) -> StepPlan:
    """The job's steps and batch split; a ConfigError when the batch does not split over the ranks or QAT
    would never start."""
    q, t = job.quant, job.train
    if t.tokens is not None:
        target_tokens = int(float(t.tokens))
    else:  # tokens per *quantized* parameter: N_quant is the law's N (design §4)
        target_tokens = int(t.tokens_per_param * n_quant)
    total_steps = max(1, math.ceil(target_tokens / t.batch_tokens))
    n_sequences = t.batch_tokens // t.seq_len
    if n_sequences % world_size:
        raise ConfigError(f"train.batch_tokens / train.seq_len ({n_sequences} sequences) must be divisible "
                          f"by the number of ranks ({world_size})")
    local_sequences = n_sequences // world_size
    micro_sequences = min(local_sequences, max(1, (t.micro_batch_tokens or t.batch_tokens) // t.seq_len))
    qat_step = steps_from(q.qat_start, total_steps) if q.format != "none" else None
    if qat_step is not None and qat_step >= total_steps:
        raise ConfigError(f"quant.qat_start ({q.qat_start}) is step {qat_step}, but the run has only "
                          f"{total_steps} steps: QAT would never start; lower it or train longer")
    warmup = max(1, steps_from(t.warmup, total_steps))
    return StepPlan(total_steps, warmup, qat_step, n_sequences, micro_sequences)
