"""bitlaw backtest (fit/study/backtest.py): a rolling origin in N, its errors, the preferred law, outputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from bitlaw.cli import main
from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.data.table import Table, prepare_table
from fit.errors import InputError
from fit.law import LAWS
from fit.render.backtest_text import format_backtest
from fit.study.backtest import BacktestOptions, backtest, default_laws, preferences, size_index

FAST = {"grid": "coarse", "workers": 1}
COUPLED = {"A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.36, "E": 1.7, "k": 0.5}
SIZES = np.geomspace(1e6, 1e9, 7)
RATIOS = (5, 20, 80, 320)  # D/N of every size's runs


def coupled_table(params: dict[str, float] = COUPLED) -> pd.DataFrame:
    """L = (A·N^−α + B·D^−β)^k + E (Skaling's form without P): a coupling the additive law cannot express."""
    rows = []
    for n in SIZES:
        for r in RATIOS:
            inner = params["A"] * n ** -params["alpha"] + params["B"] * (r * n) ** -params["beta"]
            loss = inner ** params["k"] + params["E"]
            rows.append({"run": f"N{n:.3g}-r{r}", "N": n, "D": r * n, "loss": loss})
    return pd.DataFrame(rows)


def precision_table() -> pd.DataFrame:
    return simulate(KMEANS_TRUTH, np.geomspace(1e6, 1e9, 5), np.geomspace(1e8, 1e10, 3), bits=(1, 2, 4))


# ----------------------------------------------------------------------------- errors


def test_known_law_has_near_zero_error() -> None:
    table = prepare_table(precision_table(), require=("N", "D", "loss", "P", "format"))
    result = backtest(table, BacktestOptions(("precision",), "format", **FAST))
    p = result.predictions
    assert sorted(p["origin"].unique()) == [3, 4]
    assert len(p) == 2 * 3 * 4 + 1 * 3 * 4  # origin 3: 2 held-out sizes × 3 D × (3 bits + anchor); 4: 1 size
    assert p["abs_error"].max() < 1e-4
    assert result.summary[0]["corner"]["N_factor"] == pytest.approx(1e9 / np.geomspace(1e6, 1e9, 5)[2])


def test_the_coupled_form_with_p_predicts_every_held_out_run() -> None:
    """With a P column the coupled form is fitted with γ, so its predictions need P (they were skipped:
    "a coupled-law fit needs the bits per weight" at every origin of the demo's backtest)."""
    table = prepare_table(precision_table(), require=("N", "D", "loss", "P", "format"))
    result = backtest(table, BacktestOptions(("coupled",), "format", **FAST))
    assert not result.skipped
    assert len(result.predictions) == 2 * 3 * 4 + 1 * 3 * 4
    assert result.predictions["abs_error"].max() < 0.01  # k fits ~1 on additive data


def test_missing_coupling_error_grows_with_factor_and_is_worst_at_the_corner() -> None:
    result = backtest(prepare_table(coupled_table()), BacktestOptions(("chinchilla",), **FAST))
    summary = result.summary[0]
    first = [b for b in summary["by_factor"] if b["origin"] == 3]
    mean_abs = [b["mean_abs_error"] for b in sorted(first, key=lambda b: b["N_factor"])]
    assert len(mean_abs) == 4 and all(a < b for a, b in zip(mean_abs, mean_abs[1:], strict=False))
    assert summary["abs_error_per_doubling"] > 0
    corner = summary["corner"]
    assert (corner["N"], corner["D_over_N"], corner["N_factor"]) == pytest.approx((1e9, 5.0, 100.0))
    assert abs(corner["worst_error"]) == pytest.approx(summary["max_abs_error"])
    assert corner["worst_error"] < -0.01  # the additive law promises too low a loss there
    # at every origin the corner is that origin's worst prediction
    for origin in summary["per_origin"]:
        assert abs(origin["corner"]["worst_error"]) == pytest.approx(origin["max_abs_error"])


def test_the_right_law_is_preferred_over_one_without_p() -> None:
    table = prepare_table(precision_table(), require=("N", "D", "loss", "P", "format"))
    result = backtest(table, BacktestOptions(("chinchilla", "precision"), "format", **FAST))
    pref = result.preferred["kmeans"]
    assert pref["law"] == "precision" and pref["ranking"] == ["precision", "chinchilla"]
    assert pref["mean_abs_error"]["chinchilla"] > 10 * pref["mean_abs_error"]["precision"]
    assert pref["aic"]["precision"] < pref["aic"]["chinchilla"]  # AIC on all sizes, for contrast


def _predictions(errors: dict[str, list[float]], factors: list[float]) -> pd.DataFrame:
    rows = [{"law": law, "origin": 3, "fit": "all", "row": i, "N_factor": f, "error": e, "abs_error": abs(e)}
            for law, errs in errors.items() for i, (e, f) in enumerate(zip(errs, factors, strict=True))]
    return pd.DataFrame(rows)


def test_preference_rule_ties_go_to_the_smaller_error_at_the_largest_factor() -> None:
    factors = [1.5, 3.0]
    tied = preferences(_predictions({"a": [0.01, 0.03], "b": [0.03, 0.01]}, factors), {})["all"]
    assert tied["law"] == "b" and tied["tie_broken_by_largest_factor"]
    clear = preferences(_predictions({"a": [0.01, 0.02], "b": [0.03, 0.01]}, factors), {})["all"]
    assert clear["law"] == "a" and not clear["tie_broken_by_largest_factor"]


def test_laws_are_compared_on_the_predictions_all_of_them_made() -> None:
    p = _predictions({"a": [0.01, 0.05], "b": [0.02, 0.02]}, [1.5, 3.0])
    p = p[~((p["law"] == "a") & (p["row"] == 1))]  # law a missed its worst prediction
    pref = preferences(p, {})["all"]
    assert pref["n_common"] == 1 and pref["law"] == "a"


# ----------------------------------------------------------------------------- sizes and runs


def test_sizes_within_a_tenth_of_a_percent_are_one_size() -> None:
    size, sizes = size_index(np.array([1e8, 1.0000001e8, 2e8, 2.0001e8, 4e8]))
    assert size.tolist() == [0, 0, 1, 1, 2] and sizes == [1e8, 2e8, 4e8]


def checkpoint_table() -> Table:
    """Each run logged at several D (checkpoints): one run id on several rows."""
    frame = coupled_table()
    frame["run"] = [f"N{n:.3g}" for n in frame["N"]]
    # a loader that accepts several rows per run is another issue's item; the backtest takes the table as is
    table = prepare_table(frame.drop(columns="run"))
    return dataclasses.replace(table, frame=table.frame.assign(run=frame["run"].to_numpy()))


def test_rows_of_one_run_stay_together() -> None:
    table = checkpoint_table()
    result = backtest(table, BacktestOptions(("chinchilla",), **FAST))
    rows_per_run = table.frame.groupby("run").size()
    for origin in result.origins:
        held = result.predictions[result.predictions["origin"] == origin["k"]]
        assert held["N"].min() > origin["N_max"]  # no held-out run at a fitted size
        counts = held.groupby("run").size()
        assert (counts == rows_per_run[counts.index]).all()  # every row of a held-out run, none fitted
        fitted_runs = set(table.frame["run"][table.frame["N"] <= origin["N_max"]])
        assert fitted_runs.isdisjoint(held["run"]) and origin["rows_held_out"] == len(held)


def test_a_run_at_two_sizes_is_refused() -> None:
    table = checkpoint_table()
    frame = table.frame.copy()
    frame.loc[frame.index[-1], "run"] = frame["run"].iloc[0]
    with pytest.raises(InputError, match=r"column 'run': run 'N1e\+06' has rows at N = 1e\+06 and 1e\+09"):
        backtest(dataclasses.replace(table, frame=frame), BacktestOptions(("chinchilla",), **FAST))


def test_too_few_sizes_is_refused() -> None:
    table = prepare_table(coupled_table()[lambda f: f["N"] < 2e7])  # 3 sizes
    with pytest.raises(InputError, match="3 distinct sizes; .* needs 4 or more"):
        backtest(table, BacktestOptions(("chinchilla",), **FAST))


# ----------------------------------------------------------------------------- laws


def test_default_laws_are_every_law_when_the_table_has_p_else_the_p_free_ones() -> None:
    frame = precision_table()
    assert default_laws(frame, "format") == (list(LAWS), None)  # a law added to fit.law.LAWS joins
    assert default_laws(frame.drop(columns="P"), None)[0] == ["chinchilla", "coupled"]  # both fit without P


def test_a_law_that_reads_p_needs_p() -> None:
    with pytest.raises(InputError, match="--law precision: needs a P column"):
        backtest(prepare_table(coupled_table()), BacktestOptions(("precision",), **FAST))


# ----------------------------------------------------------------------------- the command


@pytest.mark.integration  # the CLI with its plot
def test_command_writes_table_json_csv_and_plot(tmp_path, capsys) -> None:
    data = tmp_path / "runs.csv"
    precision_table().to_csv(data, index=False)
    out = tmp_path / "bt"
    args = ["backtest", str(data), "--law", "chinchilla,precision", "--by", "format", "--grid", "coarse",
            "--workers", "1"]
    assert main([*args, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kmeans: precision (mean |err|" in printed and "corner (N, D/N)" in printed
    document = json.loads((out / "backtest.json").read_text())
    csv = pd.read_csv(out / "backtest.csv")
    assert len(csv) == document["n_predictions"] == 2 * 36
    assert set(csv["law"]) == {"chinchilla", "precision"} and (out / "error_vs_factor.png").stat().st_size > 0
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["preferred"]["kmeans"]["law"] == "precision"


def test_printed_table_names_the_flags_raised_at_the_origins() -> None:
    result = backtest(prepare_table(coupled_table()), BacktestOptions(("chinchilla",), **FAST))
    doc = result.to_dict()
    for k, origin in zip((3, 5), [o for o in doc["origins"] if o["k"] in (3, 5)], strict=True):
        assert origin["k"] == k
        origin["fits"]["chinchilla"]["all"]["flags"].append("not_converged")
    printed = format_backtest(doc)
    assert f"flag: chinchilla all: not_converged at 2 of {len(doc['origins'])} origins (k = 3, 5)" in printed
    assert printed.startswith("backtest: 7 sizes, N 1M-1B; 4 origin(s), fitting the smallest 3..6 sizes")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--law", "nope"], "--law: 'nope' is not allowed; allowed: chinchilla"),
        (["--min-sizes", "2"], "--min-sizes: 2 is not allowed; at least 3"),
        (["--law", "precision"], "--by: the table holds formats kmeans, uniform; --law precision"),
    ],
)
def test_command_bad_input_is_one_line(tmp_path, capsys, extra: list[str], message: str) -> None:
    data = tmp_path / "runs.csv"
    simulate(KMEANS_TRUTH, SIZES[:5], (1e8, 1e9, 1e10), bits=(1,), formats=("kmeans", "uniform")).to_csv(
        data, index=False
    )
    assert main(["backtest", str(data), "--grid", "coarse", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
