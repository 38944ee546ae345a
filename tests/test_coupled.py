"""The coupled law form, (A·N_eff^(−α) + B·D^(−β))^k + E (issue 26 item 1): its gradient, k = 1 as the
precision law, recovery of k and γ, the P-free analogue, the refusal below 3 sizes, the k-bound flag, and the
options and commands that take a coupled fit.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitlaw import cli
from fit.answer.caveats import blocking_flags
from fit.answer.fit_source import source_from_fit
from fit.answer.recommend import recommend
from fit.answer.shapes import resolve_arch
from fit.data.simulate import COUPLED_TRUTH, KMEANS_TRUTH, default_grid, simulate
from fit.data.table import prepare_table
from fit.errors import InputError
from fit.fitfile import load_fit
from fit.law import law_of, predict_loss
from fit.solve import coupled
from fit.solve.compare import compare_forms
from fit.solve.coupled import K_BOUNDS, CoupledSpec, coupled_flags
from fit.solve.objective import FitData, LawSpec, Objective
from fit.solve.objective import objective_and_grad as additive_objective
from fit.solve.pipeline import FitOptions, run_fits

PRECISION = ("N", "D", "loss", "P", "format")
ADDITIVE = {k: v for k, v in KMEANS_TRUTH.items()}


def fit_entry(frame: pd.DataFrame, **opts) -> dict:
    options = FitOptions(law="coupled", by="format", extrapolate=False, grid="coarse", **opts)
    return run_fits(prepare_table(frame, require=PRECISION), options)["fits"]["kmeans"]


def random_data(precision: bool, n: int = 60, seed: int = 1) -> FitData:
    rng = np.random.default_rng(seed)
    P = rng.choice([1.25, 2.25, 4.25, 16.0], n) if precision else None
    group = rng.integers(0, 2, n) if precision else None
    return FitData(rng.uniform(1e6, 1e9, n), rng.uniform(1e8, 1e10, n), rng.uniform(2, 4, n), P, group,
                   rng.uniform(0.5, 2, n))  # fmt: skip


@pytest.mark.parametrize(
    "precision,tie,objective",
    [
        (True, False, Objective(delta=0.05)),
        (True, True, Objective(loss="mse", space="raw")),
        (False, False, Objective(loss="mse")),
        (False, True, Objective(delta=0.05, space="raw")),
    ],
)
def test_coupled_gradient_matches_finite_differences(
    precision: bool, tie: bool, objective: Objective
) -> None:
    data = random_data(precision)
    spec = CoupledSpec(precision, 2 if precision else 1, tie)
    gammas = [np.log(2.5), np.log(4.0)] if precision else []
    theta = np.r_[11.0, 14.0, 0.4, 0.6, [] if tie else [0.7], 0.55, gammas]
    assert len(theta) == spec.n_params
    f, grad = coupled.objective_and_grad(theta, data, spec, objective)
    step = 1e-6
    numeric = np.array([
        (coupled.objective_and_grad(theta + step * e, data, spec, objective)[0]
         - coupled.objective_and_grad(theta - step * e, data, spec, objective)[0]) / (2 * step)
        for e in np.eye(len(theta))
    ])  # fmt: skip
    assert np.isfinite(f) and np.abs(grad).max() > 1e-3  # a gradient that is not trivially zero
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7 * max(1.0, abs(f)))


@pytest.mark.parametrize("precision", [True, False])
def test_k_equal_1_is_the_additive_law_exactly(precision: bool) -> None:
    N, D = np.geomspace(1e6, 1e9, 7), np.geomspace(1e8, 1e10, 7)
    P = np.array([1.25, 2.25, 3.25, 4.25, 16, 2, 3])
    additive = ADDITIVE if precision else {k: v for k, v in ADDITIVE.items() if k != "gamma"}
    with_k = {**additive, "k": 1.0}
    assert law_of(with_k) == "coupled" and law_of(additive) == ("precision" if precision else "chinchilla")
    np.testing.assert_array_equal(predict_loss(with_k, N, D, P), predict_loss(additive, N, D, P))
    # the objective and its gradient, too: coupled θ is the additive θ with k = 1 inserted after β
    data = random_data(precision)
    additive_spec = LawSpec(precision, 2 if precision else 1)
    spec = CoupledSpec(precision, 2 if precision else 1)
    theta = np.r_[6.0, 7.5, 0.4, 0.34, 0.36, [np.log(2.5), np.log(4.0)] if precision else []]
    f_add, g_add = additive_objective(theta, data, additive_spec, Objective(delta=0.05))
    f, g = coupled.objective_and_grad(np.insert(theta, 5, 1.0), data, spec, Objective(delta=0.05))
    assert f == pytest.approx(f_add, rel=1e-13)
    np.testing.assert_allclose(np.delete(g, 5), g_add, rtol=1e-11, atol=1e-15)


def test_coupled_recovers_k_and_gamma_from_coupled_data_and_k_1_from_additive_data() -> None:
    N, D = default_grid()
    entry = fit_entry(simulate(COUPLED_TRUTH, N, D, noise=0.002, seed=1))
    assert entry["converged"] and entry["flags"] == [], entry["flags"]
    assert entry["k"] == pytest.approx(COUPLED_TRUTH["k"], abs=0.1)
    assert entry["gamma"] == pytest.approx(COUPLED_TRUTH["gamma"], rel=0.15)
    additive = fit_entry(simulate(KMEANS_TRUTH, N, D, noise=0.002, seed=1))
    assert additive["k"] == pytest.approx(1.0, abs=0.1)
    assert additive["gamma"] == pytest.approx(KMEANS_TRUTH["gamma"], rel=0.15)
    # the coupled form nests the additive one: on coupled data it wins AIC against the precision law's fit
    precision = run_fits(
        prepare_table(simulate(COUPLED_TRUTH, N, D, noise=0.002, seed=1), require=PRECISION),
        FitOptions(law="precision", by="format", extrapolate=False, grid="coarse", profile=False),
    )["fits"]["kmeans"]
    assert entry["objective"] < precision["objective"]
    rows = compare_forms({
        "coupled": {"law": "coupled", "fits": {"kmeans": entry}},
        "precision": {"law": "precision", "fits": {"kmeans": precision}},
    })["kmeans"]  # fmt: skip
    assert [r["law"] for r in rows] == ["coupled", "precision"]
    assert rows[0]["coupling"] == entry["k"] and rows[1]["coupling"] is None


def test_p_free_coupled_law_recovers_k_on_a_table_without_p() -> None:
    N, D = default_grid()
    truth = {k: v for k, v in COUPLED_TRUTH.items() if k != "gamma"}
    frame = simulate(truth, N, D, bits=(), anchor=True, noise=0.002, seed=3).drop(columns=["P", "format"])
    table = prepare_table(frame)
    entry = run_fits(table, FitOptions(law="coupled", extrapolate=False, grid="coarse"))["fits"]["all"]
    assert "gamma" not in entry and entry["k"] == pytest.approx(0.5, abs=0.1)
    assert predict_loss({k: entry[k] for k in truth}, 3e8, 3e9) == pytest.approx(
        predict_loss(truth, 3e8, 3e9), rel=0.01
    )


def test_coupled_refuses_fewer_than_3_sizes_in_one_line(tmp_path: Path, capsys) -> None:
    N, D = default_grid(4, 4)
    # format "x" has only the two smallest sizes (and no anchors to add more): the table has 4, the fit 2
    frame = pd.concat([
        simulate(COUPLED_TRUTH, N[:2], D, bits=(2,), formats=("x",), anchor=False),
        simulate(COUPLED_TRUTH, N, D, bits=(2,), formats=("y",), anchor=False),
    ])  # fmt: skip
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    code = cli.main(["fit", str(path), "-o", str(tmp_path / "fit.json"), "--law", "coupled", "--by", "format",
                     "--grid", "coarse"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--law coupled" in err[0] and "these rows have 2" in err[0]
    assert not (tmp_path / "fit.json").exists()


def test_k_at_a_bound_is_flagged_and_withholds_a_winner() -> None:
    assert coupled_flags({"k": 0.5}) == [] and coupled_flags({"k": 1.0}) == []
    for bound in K_BOUNDS:
        (flag,) = coupled_flags({"k": bound})
        assert flag.startswith("k_at_bound:") and blocking_flags([flag]) == [flag]
    # data from a k beyond the box: the fit runs k to its upper bound and says so
    N, D = default_grid(5, 4)
    steep = {**COUPLED_TRUTH, "A": 350.0 ** (1 / 5), "B": 1800.0 ** (1 / 5), "alpha": 0.068, "beta": 0.072,
             "k": 5.0}  # fmt: skip
    entry = fit_entry(simulate(steep, N, D, noise=0.001, seed=4))
    assert entry["k"] == pytest.approx(K_BOUNDS[1])
    flags = entry["flags"]
    assert any(f.startswith("k_at_bound: k=3 sits at the upper bound") for f in flags), flags


@pytest.mark.integration
def test_coupled_fit_json_serves_bootstrap_two_stage_shared_predict_and_recommend(
    tmp_path: Path, capsys
) -> None:
    N, D = default_grid(5, 4)
    frame = simulate(COUPLED_TRUTH, N, D, bits=(1, 2, 4), formats=("kmeans", "uniform"), noise=0.002, seed=5)
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    common = ["--law", "coupled", "--by", "format", "--grid", "coarse", "--workers", "1"]
    # 40 resamples: the fewest --bootstrap allows for a 95 % interval (issue 28 item 8)
    for name, extra in (("boot", ["--bootstrap", "40"]), ("two", ["--two-stage", "--bootstrap", "40"]),
                        ("shared", ["--shared"])):  # fmt: skip
        assert cli.main(["fit", str(path), "-o", str(tmp_path / f"{name}.json"), *common, *extra]) == 0, name
    out = capsys.readouterr().out
    assert "  k " in out  # the summary prints k
    boot = json.loads((tmp_path / "boot.json").read_text())
    entry = boot["fits"]["kmeans"]
    assert boot["law"] == "coupled" and len(entry["bootstrap_samples"]["k"]) == 40
    lo, hi = entry["bootstrap"]["k"]
    assert lo <= entry["k"] <= hi and entry["information"]["k"] == 7  # a, b, e, α, β, k, γ
    two = json.loads((tmp_path / "two.json").read_text())["fits"]["kmeans"]
    assert two["two_stage"] and two["k"] == pytest.approx(0.5, abs=0.15)
    shared = json.loads((tmp_path / "shared.json").read_text())["fits"]
    assert shared["kmeans"]["k"] == shared["uniform"]["k"] and shared["kmeans"]["shared"]

    assert cli.main(["predict", str(tmp_path / "boot.json"), "--N", "3e8", "--D", "3e9", "--P", "2.25",
                     "--format", "kmeans"]) == 0  # fmt: skip
    said = capsys.readouterr().out.split()
    truth = float(predict_loss(COUPLED_TRUTH, 3e8, 3e9, 2.25))
    assert float(said[0]) == pytest.approx(truth, rel=0.01) and "CI" in said
    fitfile = load_fit(tmp_path / "boot.json")
    rec = recommend(source_from_fit(fitfile), 1e9, 3e9, resolve_arch("llama3"), [1, 2, 4, 16], fmt="kmeans")
    live = [r for r in rec.rows if r.shape is not None]
    params = fitfile.params("kmeans")
    assert params["k"] == entry["k"] and len(live) >= 2
    for r in live:  # each row's loss is the coupled law's own prediction, with its bootstrap interval
        assert r.loss == pytest.approx(float(predict_loss(params, r.n_law, 3e9, r.p_w)), rel=1e-12)
        assert r.loss_ci is not None and r.loss_ci[0] <= r.loss <= r.loss_ci[1]
    assert rec.ranked_by == "loss" and rec.leader is min(live, key=lambda r: r.loss)


def test_recommend_refuses_a_coupled_fit_without_p(tmp_path: Path, capsys) -> None:
    N, D = default_grid(4, 4)
    truth = {k: v for k, v in COUPLED_TRUTH.items() if k != "gamma"}
    path = tmp_path / "runs.csv"
    simulate(truth, N, D, bits=(), noise=0.001).drop(columns=["P", "format"]).to_csv(path, index=False)
    fit = tmp_path / "fit.json"
    assert cli.main(["fit", str(path), "-o", str(fit), "--law", "coupled", "--grid", "coarse"]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(fit), "--N", "1e8", "--D", "1e9"]) == 0  # no --P needed
    assert float(capsys.readouterr().out.split()[0]) == pytest.approx(predict_loss(truth, 1e8, 1e9), rel=0.01)
    refused = r"recommend needs a law with a bits-per-weight term .* 'coupled' fitted without P"
    with pytest.raises(InputError, match=refused):
        source_from_fit(load_fit(fit))


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--two-stage"], "--two-stage: --law coupled needs a P column"),
        (["--shared"], "--shared: --law coupled needs a P column"),
    ],
)
def test_options_that_need_gamma_are_refused_without_p(tmp_path: Path, capsys, extra, needle) -> None:
    N, D = default_grid(4, 4)
    truth = {k: v for k, v in COUPLED_TRUTH.items() if k != "gamma"}
    path = tmp_path / "runs.csv"
    frame = simulate(truth, N, D, bits=(2,), formats=("a", "b"), anchor=False)
    frame.drop(columns=["P"]).to_csv(path, index=False)
    argv = ["fit", str(path), "-o", str(tmp_path / "fit.json"), "--law", "coupled", "--by", "format", *extra]
    code = cli.main([*argv, "--grid", "coarse"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
