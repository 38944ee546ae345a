"""Identification rests on the objective, not on how far bootstrap refits moved (issue 28 item 1), and large
tables stay bounded in memory with the same answers (item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bitlaw.commands.fit import format_summary
from fit.answer.caveats import blocking_flags, interval_note, unidentified_params
from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.data.table import load_table, prepare_table
from fit.fitfile import load_fit
from fit.solve import batched, optimize
from fit.solve.diagnostics import LR_95, likelihood_ratio, lr_scale, profile_interval
from fit.solve.objective import FitData, LawSpec, Objective
from fit.solve.pipeline import FitOptions, run_fits

ROOT = Path(__file__).resolve().parents[1]
REQUIRE = ("N", "D", "loss", "P", "format")


@pytest.fixture(scope="module")
def flat_fit() -> dict:
    """The issue's case: A so small that the N term (and with it γ) has no effect on any row's loss.  The
    coarse grid lands γ inside its box, where the bootstrap refits, warm-started there, barely move it."""
    truth = dict(KMEANS_TRUTH, A=1e-3)
    frame = simulate(truth, np.geomspace(5e4, 3e5, 4), np.geomspace(1e6, 1e8, 5), noise=0.01, seed=3)
    table = prepare_table(frame, require=REQUIRE)
    opts = FitOptions(law="precision", by="format", bootstrap=40, workers=1, grid="coarse", progress=False)
    return run_fits(table, opts)["fits"]["kmeans"]


def _document(entry: dict) -> dict:
    return {
        "law": "precision", "loss": "huber", "delta": 1e-3, "space": "log", "by": "format",
        "data": {"rows_used": 100, "dropped": {}, "where": None, "bootstrap_unit": "run"},
        "options": {"bootstrap": 40, "seed": 0}, "fits": {"kmeans": entry}, "extrapolation": {},
    }  # fmt: skip


def test_flat_gamma_is_flagged_though_its_bootstrap_ci_looks_tight(flat_fit) -> None:
    band = flat_fit["bootstrap"]["gamma"]
    # what the old criterion saw: a CI well inside the box (before: printed as a measurement, no γ flag)
    assert 0.2 < band[0] < band[1] < 40 and band[1] / band[0] < 3
    assert any(f.startswith("exponent_gt_1.5: alpha=") for f in flat_fit["flags"])  # α at its bound
    verdict = flat_fit["identification"]["gamma"]
    assert verdict["identified"] is False and verdict["max_lr"] < LR_95
    assert verdict["interval"] == [None, None]  # the whole box is inside the 95 % likelihood interval
    flags = [f for f in flat_fit["flags"] if f.startswith("gamma_unidentified: gamma=")]
    assert len(flags) == 1 and "0.1 to 50" in flags[0]
    assert flags[0] in blocking_flags(flat_fit["flags"])  # recommend names no winner on it
    # A too: A·N^-10 is ~0 on every row whether A is 1/1000 or 1000 times its estimate
    assert unidentified_params(flat_fit) == {"A", "gamma"}


def test_flat_gamma_is_not_printed_as_measured(flat_fit) -> None:
    printed = format_summary(_document(flat_fit))
    gamma_line = next(line for line in printed.splitlines() if line.strip().startswith("gamma"))
    assert "not identified" in gamma_line and "CI" not in gamma_line
    assert "FLAG gamma_unidentified" in printed
    alpha_line = next(line for line in printed.splitlines() if line.strip().startswith("alpha "))
    assert "95% CI" in alpha_line  # the others keep their intervals


def test_report_claims_no_contradiction_of_1bw_for_a_flat_gamma(tmp_path, flat_fit) -> None:
    from fit.render.report import section_fits, section_gamma

    path = tmp_path / "fit.json"
    path.write_text(json.dumps(_document(flat_fit)))
    fitfile = load_fit(path)
    gamma = "\n".join(section_gamma(fitfile))
    row = next(line for line in gamma.splitlines() if line.startswith("| kmeans"))
    verdict = row.split("|")[-2].strip()  # the "1BW inside CI" cell: neither yes nor no
    assert "not identified" in row and verdict.startswith("–") and "CI [" not in row
    fits = "\n".join(section_fits(fitfile))
    gamma_row = next(line for line in fits.splitlines() if line.startswith("| gamma"))
    assert "not identified" in gamma_row and "[" not in gamma_row


def test_demo_kmeans_gamma_is_identified_and_uniform_bounded_only_below() -> None:
    table = load_table(ROOT / "tests/data/demo_runs_2026_12_02.csv", None, None, REQUIRE, False, None)
    opts = FitOptions(law="precision", by="format", extrapolate=False, progress=False)
    fits = run_fits(table, opts)["fits"]
    kmeans, uniform = fits["kmeans"], fits["uniform"]
    assert not unidentified_params(kmeans) and not unidentified_params(uniform)
    assert not any("_unidentified" in f for f in kmeans["flags"] + uniform["flags"])
    lo, hi = kmeans["identification"]["gamma"]["interval"]
    assert lo is not None and hi is not None and lo < kmeans["gamma"] < hi  # bounded on both sides
    assert uniform["identification"]["gamma"]["interval"][1] is None  # no upper end inside γ <= 50
    assert interval_note(uniform, "gamma").startswith("profile: bounded only below, gamma >= ")
    assert interval_note(kmeans, "gamma") == ""


def test_likelihood_ratio_scale_and_threshold() -> None:
    # Laplace: LR = 2n·log(f/f*); 20 units: a 10 % rise is LR 3.81 (inside), 11 % is 4.17 (outside)
    scale = lr_scale("huber", 20)
    assert likelihood_ratio(np.array([1.10, 1.11]), 1.0, scale) == pytest.approx([3.812, 4.174], abs=1e-3)
    assert lr_scale("mse", 20) == 20.0
    assert likelihood_ratio(np.array([0.5, 1.0]), 1.0, scale).tolist() == [0.0, 0.0]  # never negative
    assert likelihood_ratio(np.array([1e-20]), 0.0, scale)[0] > LR_95  # an exact fit: any rise decides


def test_profile_interval_sides() -> None:
    grid = [0.1, 1.0, 10.0, 50.0]
    both = profile_interval(grid, [2.0, 1.0, 1.0, 2.0], 1.0, 40.0)
    assert both["interval"][0] is not None and both["interval"][1] is not None
    assert 0.1 < both["interval"][0] < 1.0 and 10.0 < both["interval"][1] < 50.0
    below = profile_interval(grid, [2.0, 1.0, 1.0, 1.05], 1.0, 40.0)
    assert below["interval"][0] is not None and below["interval"][1] is None
    flat = profile_interval(grid, [1.0, 1.0, 1.01, 1.0], 1.0, 40.0)
    assert flat["interval"] == [None, None] and flat["max_lr"] < LR_95


def test_progress_lines_name_each_stage(capsys) -> None:
    frame = simulate(KMEANS_TRUTH, np.geomspace(5e4, 3e5, 4), np.geomspace(1e6, 1e8, 4), noise=0.01, seed=1)
    table = prepare_table(frame, require=REQUIRE)
    run_fits(table, FitOptions(law="precision", by="format", grid="coarse", progress=True))
    err = capsys.readouterr().err
    for stage in ("fitting", "refitting without the largest N", "profiling gamma"):
        assert f"fit 1/1 (kmeans, 80 rows): {stage}" in err


def test_memory_blocks_change_no_answer(monkeypatch) -> None:
    """The screen and the batched Newton refits split large tables into blocks (issue 28 item 8): the same
    starts and the same draws as one block."""
    frame = simulate(KMEANS_TRUTH, np.geomspace(5e4, 3e5, 4), np.geomspace(1e6, 1e8, 4), noise=0.01, seed=2)
    data = FitData(frame["N"], frame["D"], frame["loss"], frame["P"])
    spec, obj = LawSpec(precision=True), Objective()
    starts = optimize.start_grid(spec, "coarse")
    whole = optimize.screen(starts, data, spec, obj, 8)
    theta0 = optimize.fit_law(data, spec, obj, "coarse").theta
    weight = np.random.default_rng(0).poisson(1.0, (6, len(frame))).astype(float)
    draws = batched.refit_batch(theta0, data, weight, spec, obj)
    monkeypatch.setattr(optimize, "SCREEN_CELLS", 7 * len(frame))  # blocks of 7 starts
    monkeypatch.setattr(batched, "NEWTON_CELLS", 4 * len(frame) * len(theta0))  # blocks of 4 resamples
    assert np.array_equal(optimize.screen(starts, data, spec, obj, 8), whole)
    assert np.array_equal(batched.refit_batch(theta0, data, weight, spec, obj), draws)


def test_tied_and_offset_fits_are_judged_per_fitted_variable() -> None:
    """--tie-exponents (no β column) and --offset (a p0 column): one verdict per variable actually fitted."""
    frame = simulate(KMEANS_TRUTH, np.geomspace(5e4, 3e5, 4), np.geomspace(1e6, 1e8, 4), noise=0.01, seed=4)
    table = prepare_table(frame, require=REQUIRE)
    opts = FitOptions(law="precision", by="format", grid="coarse", tie=True, offset=True, extrapolate=False,
                      progress=False)  # fmt: skip
    entry = run_fits(table, opts)["fits"]["kmeans"]
    assert set(entry["identification"]) == {"A", "B", "E", "alpha", "gamma", "offset"}
    assert entry["identification"]["gamma"]["method"].startswith("profile")
