"""`bitlaw plan`: γ identified with 16-bit anchors and not without, the JSON contract, compute, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from bitlaw import cli
from fit.answer.presets import FormatLaw, LawSource
from fit.answer.shapes import llama3_shapes
from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.solve.pipeline import FitOptions
from fit.study.plan import compute_cost, flagged_params, grid_table, plan, seed_spread
from sweep import contract

# a coarse grid that still spans N 1000× and D 100× (what identifies E, α, β: reference fitting.md §4.3)
N_GRID = np.geomspace(1e6, 1e9, 4)
D_GRID = np.geomspace(1e8, 1e10, 3)
OPTS = FitOptions(law="precision", by="format", grid="coarse", extrapolate=False, profile=False)
SOURCE = LawSource("truth", {"kmeans": FormatLaw("kmeans", dict(KMEANS_TRUTH))})


def _grid(anchor: bool) -> pd.DataFrame:
    return grid_table(simulate(KMEANS_TRUTH, N_GRID, D_GRID, anchor=anchor).drop(columns="loss"))


def test_gamma_unidentified_without_anchor_identified_with_it():
    without = plan(_grid(anchor=False), SOURCE, OPTS, noise=0.005, simulations=8, shapes=None)
    with_anchor = plan(_grid(anchor=True), SOURCE, OPTS, noise=0.005, simulations=8, shapes=llama3_shapes())

    gamma_without = without["formats"]["kmeans"]["parameters"]["gamma"]
    assert gamma_without["identified"] is False
    fired = {f["name"]: f["share"] for f in without["formats"]["kmeans"]["flags"]}
    assert fired.get("no_16bit_anchor") == 1.0
    assert "no_16bit_anchor" in gamma_without["why_not"]

    kmeans = with_anchor["formats"]["kmeans"]
    gamma = kmeans["parameters"]["gamma"]
    assert gamma["identified"] is True and gamma["why_not"] is None
    lo, hi = gamma["interval"]
    assert lo <= KMEANS_TRUTH["gamma"] <= hi and hi / lo < 1.5
    assert "no_16bit_anchor" not in {f["name"] for f in kmeans["flags"]}
    best = kmeans["best_bits"]
    assert best["truth_bits"] in best["bits"] and 0.0 <= best["share"] <= 1.0
    assert math.isclose(sum(best["replica_bits"].values()), 1.0)


def test_flags_name_the_parameters_they_concern():
    assert flagged_params("exponent_gt_1.5: alpha=2 (likely unidentified)") == {"alpha"}
    assert "gamma" in flagged_params("exponent_at_zero: alpha=0: ... (and gamma, if it multiplies N) ...")
    assert flagged_params("no_16bit_anchor: no row with P >= 8") == {"gamma"}
    assert flagged_params("coefficient_gt_1e10: B=3e11 (likely unidentified)") == {"B"}


def test_compute_counts_trunks_once_and_uses_the_stated_formula():
    frame = pd.DataFrame(
        {
            "N": [1e6, 1e6, 2e6],
            "D": [1e8, 2e8, 1e8],
            "P": [2.25] * 3,
            "format": ["kmeans"] * 3,
            "trunk": ["t0", "t0", "t1"],
        }
    )
    cost = compute_cost(grid_table_frame(frame), flops_per_s=1e12)
    assert (cost["runs"], cost["trunks"]) == (3, 2)
    assert cost["tokens"] == 3e8  # trunk t0 trains once, to its largest D
    assert cost["flops"] == pytest.approx(6 * (1e6 * 2e8 + 2e6 * 1e8))  # no shape columns: 6·N·D only
    assert cost["hours"] == pytest.approx(cost["flops"] / 1e12 / 3600)
    assert "attention term omitted" in cost["flops_formula"]
    shaped = frame.assign(
        **{"model.d_model": 64, "model.n_layers": 2, "model.vocab_size": 256, "train.seq_len": 128}
    )
    with_attention = compute_cost(grid_table_frame(shaped))
    per_token = 6 * (1e6 + 256 * 64) + 6 * 2 * 128 * 64
    assert with_attention["flops"] == pytest.approx(
        per_token * 2e8 + (6 * (2e6 + 256 * 64) + 6 * 2 * 128 * 64) * 1e8
    )
    assert compute_cost(grid_table_frame(frame), tokens_per_s=1e5)["hours"] == pytest.approx(3e8 / 1e5 / 3600)


def grid_table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    # three distinct N and D are what a table needs; compute_cost itself takes any planned rows
    return frame.assign(run=[f"r{i}" for i in range(len(frame))], bits=2)


def test_seed_spread_is_the_pooled_log_spread_across_seeds():
    base = pd.DataFrame({"format": ["kmeans"] * 4, "N": [1, 1, 2, 2], "D": [1, 1, 1, 1], "P": [2.25] * 4})
    frame = base.assign(seed=[0, 1, 0, 1], loss=[3.0 * math.exp(0.01), 3.0 * math.exp(-0.01), 2.0, 2.0])
    # two cells, one degree of freedom each: variances (2·0.01²)/1 and 0, pooled over 2
    assert seed_spread(frame) == pytest.approx(math.sqrt(0.01**2))
    assert seed_spread(base.assign(loss=1.0)) is None


def test_json_contract(tmp_path, capsys):
    table = tmp_path / "grid.csv"
    _grid(anchor=True).to_csv(table, index=False)
    code = cli.main(
        [
            "plan",
            str(table),
            "--preset",
            "1bw-kmeans",
            "--simulations",
            "3",
            "--workers",
            "1",
            "--grid-starts",
            "coarse",
            "--json",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    kmeans = doc["formats"]["kmeans"]
    assert set(kmeans["parameters"]) == {"A", "B", "E", "alpha", "beta", "gamma"}
    for entry in kmeans["parameters"].values():
        lo, hi = entry["interval"]
        assert isinstance(entry["identified"], bool) and lo <= hi
    assert isinstance(kmeans["flags"], list)
    for key in ("runs", "trunks", "tokens", "flops", "hours"):
        assert key in kmeans["compute"] and key in doc["compute"]
    assert doc["compute"]["runs"] == len(_grid(anchor=True))
    assert doc["noise"] == 0.005 and doc["simulations"] == 3


def test_experiment_grid_is_composed_through_hydra():
    from bitlaw.commands.plan import experiment_grid

    grid = experiment_grid(["experiment=smoke"])
    tiny = contract.param_counts(64, 1, 4, 2, 64, 256)["N_quant"]
    assert len(grid) == 4 and set(grid["N"]) == {tiny}
    assert sorted(zip(grid["format"], grid["P"], strict=True)) == [
        ("kmeans", 2.25),
        ("kmeans", 4.25),
        ("uniform", 2.25),
        ("uniform", 4.25),
    ]
    assert set(grid["D"]) == {math.ceil(100000 / 2048) * 2048}  # tokens seen: whole batches of 2048
    swept = experiment_grid(["experiment=smoke", "train.tokens=1e5,2e5", "point=kmeans2"])
    assert len(swept) == 2 and sorted(swept["D"]) == [math.ceil(n / 2048) * 2048 for n in (1e5, 2e5)]


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--preset", "1bw-kmeans", "--noise", "-0.1"], "--noise"),
        (["--preset", "1bw-kmeans", "--simulations", "1"], "--simulations"),
        (["--preset", "1bw-kmeans", "--flops-per-s", "0"], "--flops-per-s"),
        (["--preset", "nope"], "--preset"),
        ([], "--law/--preset"),
        (["--preset", "1bw-kmeans", "--memory", "8 parsecs"], "--memory"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(tmp_path, capsys, argv, option):
    table = tmp_path / "grid.csv"
    _grid(anchor=True).to_csv(table, index=False)
    assert cli.main(["plan", str(table), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err


def test_bad_grids_are_one_line(tmp_path, capsys):
    no_p = tmp_path / "no_p.csv"
    _grid(anchor=True).drop(columns="P").to_csv(no_p, index=False)
    only_anchor = tmp_path / "anchor.csv"
    frame = _grid(anchor=True)
    frame[frame["format"] == "none"].to_csv(only_anchor, index=False)
    cases = [
        ([str(no_p)], "'P'"),
        ([str(only_anchor)], "16-bit anchor"),
        ([str(no_p), "extra"], "TABLE | experiment=NAME"),
        (["experiment=no_such_grid"], "experiment"),
    ]
    for grid, needle in cases:
        assert cli.main(["plan", *grid, "--preset", "1bw-kmeans"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
