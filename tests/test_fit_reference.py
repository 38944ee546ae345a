"""Regression against published fits on public data (tests/data/README.md has the provenance)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitlaw import cli
from fit.data.table import prepare_table
from fit.solve.objective import FitData, LawSpec, Objective, named_params
from fit.solve.optimize import fit_law
from fit.solve.pipeline import FitOptions, run_fits

DATA = Path(__file__).parent / "data"


def epoch_240() -> pd.DataFrame:
    """Epoch's 240 points: drop the 5 highest losses, D = C / 6N."""
    raw = pd.read_csv(DATA / "epoch_chinchilla_svg_extracted_data.csv")
    kept = raw[raw["loss"] < sorted(raw["loss"])[-5]]
    n = kept["Model Size"].to_numpy()
    return pd.DataFrame(
        {"N": n, "D": kept["Training FLOP"].to_numpy() / (6 * n), "loss": kept["loss"].to_numpy()}
    )


@pytest.fixture(scope="module")
def epoch_fit():
    frame = epoch_240()
    result = fit_law(FitData(frame["N"], frame["D"], frame["loss"]), LawSpec(), Objective())
    return frame, result


def test_epoch_objective_and_parameters_match_the_published_grid_optimum(epoch_fit) -> None:
    frame, result = epoch_fit
    assert len(frame) == 240
    assert result.objective <= 0.0010182740 + 1e-9
    assert result.converged and result.grad_norm < 1e-8
    p = named_params(result.theta, LawSpec())[0]
    assert p["E"] == pytest.approx(1.8172, abs=0.003)
    assert p["alpha"] == pytest.approx(0.34731, abs=0.003)
    assert p["beta"] == pytest.approx(0.36718, abs=0.005)
    assert p["A"] == pytest.approx(477.84, rel=0.03)
    assert p["B"] == pytest.approx(2143.86, rel=0.05)


def test_scipy_default_tolerances_would_stop_early_but_ours_do_not(epoch_fit) -> None:
    """scipy's default stopping trap (method.md §6), kept so nobody 'simplifies' the tolerances away."""
    from scipy.optimize import minimize

    from fit.solve.objective import objective_and_grad

    frame, result = epoch_fit
    data = FitData(frame["N"], frame["D"], frame["loss"])
    hoffmann = np.array([6.0073404, 6.0179186, 0.5267228, 0.33917084, 0.2849083])
    loose = minimize(
        objective_and_grad, hoffmann, args=(data, LawSpec(), Objective()), jac=True, method="L-BFGS-B"
    )
    assert loose.fun > result.objective + 1e-5  # stopped near the start
    assert result.objective < 0.0010183


def test_gemstones_hot_matches_published_fit() -> None:
    published = pd.read_csv(DATA / "gemstones_hot_published_fits.csv").query("huber_delta == 0.001").iloc[0]
    rows = pd.read_json(DATA / "gemstones_hot.jsonl", lines=True)
    data = FitData(rows["params_active_precise"], rows["tokens"], rows["final_loss"])
    result = fit_law(data, LawSpec(), Objective(delta=1e-3))
    p = named_params(result.theta, LawSpec())[0]
    assert result.objective <= 0.0019816129 + 1e-9
    assert p["alpha"] == pytest.approx(published["alpha"], abs=0.003)
    assert p["beta"] == pytest.approx(published["beta"], abs=0.01)


def test_epoch_at_16_bits_precision_law_reduces_to_chinchilla() -> None:
    frame = epoch_240().assign(P=16.0)
    table = prepare_table(frame, require=("N", "D", "loss", "P"))
    chin = run_fits(table, FitOptions(law="chinchilla", extrapolate=False))["fits"]["all"]
    prec = run_fits(table, FitOptions(law="precision", extrapolate=False))["fits"]["all"]
    assert prec["A"] == pytest.approx(chin["A"], rel=0.005)
    for key in ("B", "E", "alpha", "beta"):
        assert prec[key] == pytest.approx(chin[key], rel=1e-3)
    assert prec["objective"] == pytest.approx(chin["objective"], rel=1e-9)
    # with no bit width below 16, gamma has nothing to fit: it must be reported, not trusted
    assert any(flag.startswith("single_P") for flag in prec["flags"])
    assert any(flag.startswith("gamma_at_bound") for flag in prec["flags"])


@pytest.mark.integration  # a public table through the CLI
def test_cli_fit_on_epoch_writes_a_complete_fit_json(tmp_path, capsys) -> None:
    frame = epoch_240().rename(columns={"N": "params", "D": "tokens", "loss": "val"})
    csv = tmp_path / "epoch.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    code = cli.main(
        ["fit", str(csv), "-o", str(out), "--columns", "N=params,D=tokens,loss=val", "--grid", "coarse"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "objective 0.00101827" in printed and "MAPE" in printed and f"wrote {out}" in printed
    doc = json.loads(out.read_text())
    entry = doc["fits"]["all"]
    assert entry["objective"] <= 0.0010182740 + 1e-9  # the coarse grid still finds the optimum
    assert doc["columns"] == {"N": "params", "D": "tokens", "loss": "val"}
    assert doc["loss"] == "huber" and doc["delta"] == 1e-3 and doc["space"] == "log"
    assert len(doc["data"]["sha256"]) == 64 and doc["data"]["rows_used"] == 240
    assert 0 < doc["extrapolation"]["mape"] < 0.05
    assert "gamma" not in entry and entry["flags"] == []
