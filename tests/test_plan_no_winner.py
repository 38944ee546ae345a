"""`bitlaw plan` when a simulated fit names no winner (every bit width predicts the same loss): such a
replica counts as "no winner" in the best-bit-width share, and plan finishes (it crashed with
``'NoneType' object has no attribute 'bits'``: issue 28, item 5)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from bitlaw import cli
from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.study.plan import grid_table

N_GRID = np.geomspace(1e6, 1e9, 3)
D_GRID = np.geomspace(1e8, 1e10, 3)


def _grid_csv(tmp_path) -> str:
    path = tmp_path / "grid.csv"
    grid = simulate(KMEANS_TRUTH, N_GRID, D_GRID, bits=(2, 4)).drop(columns="loss")
    grid_table(grid).to_csv(path, index=False)
    return str(path)


def _best_bits(doc: dict) -> dict:
    best = doc["formats"]["kmeans"]["best_bits"]
    shares = sum(best["replica_bits"].values()) + best["no_winner_share"]
    assert abs(shares - 1.0) < 1e-9  # every replica is counted once: a bit width or no winner
    return best


def test_high_noise_replicas_without_a_winner_are_counted_not_fatal(tmp_path, capsys):
    argv = ["plan", _grid_csv(tmp_path), "--preset", "1bw-kmeans", "--noise", "0.3", "--simulations", "4",
            "--workers", "1", "--grid-starts", "coarse"]
    assert cli.main([*argv, "--json"]) == 0
    best = _best_bits(json.loads(capsys.readouterr().out))
    assert best["truth_bits"] in best["bits"]
    assert best["no_winner_share"] > 0  # at 30 % noise some replicas' fits tie every bit width (seed 0)

    assert cli.main(argv) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "best bit width" in ln)
    assert "no winner" in line and f"truth {best['truth_bits']}-bit" in line


def test_planning_from_a_weak_fit(tmp_path, capsys):
    # a table whose loss does not fall with N (as the tour's too-short runs): its fit is weak, and the
    # replicas simulated from it fit α far beyond 1.5, where the N term vanishes and no bit width wins
    frame = simulate(KMEANS_TRUTH, N_GRID, D_GRID, bits=(2, 4))
    rng = np.random.default_rng(1)
    frame["loss"] = 1.6 + 1800.0 * frame["D"] ** -0.36 * np.exp(0.002 * rng.standard_normal(len(frame)))
    table, fit = tmp_path / "weak.csv", tmp_path / "fit.json"
    pd.DataFrame(frame).to_csv(table, index=False)
    assert cli.main(["fit", str(table), "-o", str(fit), "--law", "precision", "--by", "format",
                     "--grid", "coarse"]) == 0
    capsys.readouterr()

    argv = ["plan", str(table), "--law", str(fit), "--simulations", "3", "--workers", "1",
            "--grid-starts", "coarse"]
    assert cli.main([*argv, "--json"]) == 0
    best = _best_bits(json.loads(capsys.readouterr().out))
    assert best["no_winner_share"] == 1.0 and best["share"] == 0.0
    assert cli.main(argv) == 0
    assert "0 % of replicas agree (no winner 100 %)" in capsys.readouterr().out


def test_a_truth_without_a_winner_agrees_with_replicas_without_one():
    from fit.answer.presets import FormatLaw
    from fit.answer.shapes import llama3_shapes
    from fit.study.plan import best_bits_match

    flat = {**KMEANS_TRUTH, "alpha": 60.0}  # N_eff^-60 underflows: every bit width predicts the same loss
    entries = [dict(flat), {**KMEANS_TRUTH}]
    best = best_bits_match(FormatLaw("kmeans", flat), entries, "kmeans", [2, 4, 16], 8e9, 1e10,
                           llama3_shapes(), "quant")
    assert best["truth_bits"] is None
    assert best["share"] == 0.5 and best["no_winner_share"] == 0.5
    assert list(best["replica_bits"].values()) == [0.5]
