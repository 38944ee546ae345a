"""Several token budgets from one run: WSD cooldown branches off a constant-LR trunk.

`train.schedule=wsd train.tokens=D_max train.branches=[D_1, …, D_k]` trains one trunk at constant LR. When it
reaches the step where a standalone WSD run of D_i tokens would start its decay, a branch is forked: it runs
that decay to D_i, is evaluated as the standalone run would be, is recorded as a run dir of its own, and the
trunk is restored and goes on; the trunk's own decay ends at D_max.

A branch equals the standalone run `train.tokens=D_i` (same warmup, QAT switch, learning rates, data and
evaluation steps) only where every setting means the same in both, so settings given as a fraction of the
run (which differs per branch) are refused here, with one line, before anything trains.

Pure Python (no torch): the schedule arithmetic and the checks; sweep/train.py does the training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class BranchError(ValueError):
    """A branch setting that cannot work; the message is one line naming the key and what is allowed."""


@dataclass(frozen=True)
class Branch:
    tokens: int      # the branch's token budget D_i, as asked (train.tokens of the standalone run)
    steps: int       # its optimizer steps, ceil(D_i / batch_tokens); it sees steps · batch_tokens tokens
    fork_step: int   # steps the trunk has taken when the branch forks: where its decay starts

    @property
    def name(self) -> str:
        """The branch's run dir name below RUN_DIR/branches/."""
        return f"D={self.tokens}"


def decay_steps(total_steps: int, decay_fraction: float) -> int:
    """Steps of the WSD decay of a run of `total_steps` (at least one)."""
    return max(1, int(round(decay_fraction * total_steps)))


def decay_start(total_steps: int, decay_fraction: float) -> int:
    """The first step (0-based) of the decay: the LR is constant before it (after warmup)."""
    return total_steps - decay_steps(total_steps, decay_fraction)


def wsd_learning_rate(step: int, total_steps: int, warmup: int, lr: float, min_lr_ratio: float,
                      decay_fraction: float) -> float:
    """Warmup (linear), stable, decay (linear to lr·min_lr_ratio), for a run of `total_steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    start = decay_start(total_steps, decay_fraction)
    if step < start:
        return lr
    floor = lr * min_lr_ratio
    return lr - (lr - floor) * (step - start) / max(1, total_steps - start)


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < float(value) < 1


def plan_branches(train: Any, quant_format: str, qat_start: float) -> list[Branch]:
    """The branches of a run, sorted by tokens, or [] when `train.branches` is empty; raises BranchError.

    `train` carries schedule, tokens, branches, batch_tokens, decay_fraction, warmup, eval_every,
    final_eval_spacing; `qat_start` is quant.qat_start (a fraction or a step), ignored for format none.
    """
    raw = list(train.branches or [])
    if not (0 < float(train.decay_fraction) < 1):
        raise BranchError(f"train.decay_fraction: {train.decay_fraction} is outside (0, 1)")
    if not raw:
        return []
    if train.schedule != "wsd":
        raise BranchError(f"train.branches needs train.schedule=wsd (got {train.schedule}): only a "
                          "constant-LR trunk can be branched")
    if train.tokens is None:
        raise BranchError("train.branches needs train.tokens (the trunk's D_max in tokens), not "
                          "train.tokens_per_param")
    tokens = _tokens(train.tokens, "train.tokens")
    budgets = [_tokens(value, "train.branches") for value in raw]
    if len(set(budgets)) != len(budgets):
        raise BranchError(f"train.branches: {raw} repeats a token budget; list each once")
    fractional = [(key, value) for key, value in (("train.warmup", train.warmup),
                                                  ("train.eval_every", train.eval_every),
                                                  ("train.final_eval_spacing", train.final_eval_spacing))
                  if _is_fraction(value)]
    if quant_format != "none" and _is_fraction(qat_start):
        fractional.append(("quant.qat_start", qat_start))
    if fractional:
        key, value = fractional[0]
        raise BranchError(f"{key}: {value} is a fraction of the run, which is a different step in each "
                          f"branch; give it in steps (>= 1) with train.branches")
    warmup = int(train.warmup)
    total = math.ceil(tokens / train.batch_tokens)
    branches = []
    for budget in sorted(budgets):
        if budget >= tokens:
            raise BranchError(f"train.branches: {budget} is not below train.tokens ({tokens}); every branch "
                              "ends before the trunk")
        steps = math.ceil(budget / train.batch_tokens)
        fork = decay_start(steps, train.decay_fraction)
        if fork < warmup or steps >= total:
            raise BranchError(f"train.branches: {budget} tokens are {steps} steps, shorter than warmup "
                              f"({warmup}) + decay ({decay_steps(steps, train.decay_fraction)}) or not "
                              f"shorter than the trunk ({total} steps); raise it or lower train.warmup")
        branches.append(Branch(tokens=budget, steps=steps, fork_step=fork))
    return branches


def _tokens(value: Any, key: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BranchError(f"{key}: {value!r} is not a number of tokens") from None
    if not math.isfinite(number) or number <= 0:
        raise BranchError(f"{key}: {value!r} is not a positive number of tokens")
    return int(number)


def standalone_config(config: dict[str, Any], branch: Branch) -> dict[str, Any]:
    """The resolved config of the standalone run a branch equals: train.tokens = D_i, no branches. Its run
    id is the branch's run id, so a branch and the standalone run are one experiment."""
    out = {**config, "train": {**config["train"], "tokens": branch.tokens, "branches": []}}
    return out


def trained_tokens(trunk_steps: int, batch_tokens: int, branches: Sequence[Branch]) -> int:
    """Tokens one branched job trains: the trunk plus every branch's decay."""
    return batch_tokens * (trunk_steps + sum(b.steps - b.fork_step for b in branches))


def separate_tokens(trunk_steps: int, batch_tokens: int, branches: Sequence[Branch]) -> int:
    """Tokens the same D points would cost as separate runs: the trunk's and every branch's full length."""
    return batch_tokens * (trunk_steps + sum(b.steps for b in branches))
