"""`bitlaw plan experiment=...` sees every token budget a trunk yields through its WSD branches, and costs
the trunk once plus each branch's cooldown (what sweep/branches.py trains)."""

from __future__ import annotations

import pytest

from bitlaw.commands.plan import experiment_grid
from fit.study.plan import compute_cost
from sweep.branches import decay_start


@pytest.mark.slow
def test_a_branched_experiment_plans_one_row_per_budget_and_costs_the_trunk_once() -> None:
    grid = experiment_grid(["experiment=demo"])
    assert len(grid) == 84 and grid["trunk"].nunique() == 28
    assert sorted(grid["D"].unique()) == [384000.0, 576512.0, 768000.0]  # whole batches of 1024
    per_trunk = grid.groupby("trunk")
    assert (per_trunk["D"].nunique() == 3).all() and (per_trunk["N"].nunique() == 1).all()
    cooldown = sum(s - decay_start(s, 0.2) for s in (375, 563)) * 1024
    assert (per_trunk["train_tokens"].sum() == 768000 + cooldown).all()
    cost = compute_cost(grid)
    assert cost["runs"] == 84 and cost["trunks"] == 28
    assert cost["tokens"] == 28 * (768000 + cooldown)
    assert cost["tokens"] < grid["D"].sum()  # the saving against one D per run
