"""Forecast intervals that carry the backtest's error (fit/answer/forecast.py), and no winner the margin
cannot carry (fit/answer/recommend.py): the error model, predict --json, recommend, verify plan, and the
backtest's score of the intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitlaw.cli import main
from fit.answer.fit_source import source_from_fit
from fit.answer.forecast import DEFAULT, SLOPE_FLOOR, fit_envelope, forecast
from fit.answer.recommend import recommend
from fit.answer.shapes import resolve_arch
from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.data.table import prepare_table
from fit.fitfile import load_fit
from fit.render.recommend_text import render_text, to_json
from fit.study.backtest import BacktestOptions, backtest

CHIN = {"A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.36, "E": 1.7}


def chinchilla_table(sizes: np.ndarray, ratios=(5, 20, 80), noise: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        for r in ratios:
            loss = CHIN["A"] * n ** -CHIN["alpha"] + CHIN["B"] * (r * n) ** -CHIN["beta"] + CHIN["E"]
            loss *= np.exp(noise * rng.normal())
            rows.append({"run": f"{n:.3g}-{r}", "N": n, "D": r * n, "loss": loss})
    return pd.DataFrame(rows)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def fit_cli(capsys, tmp_path: Path, frame: pd.DataFrame, *extra: str) -> Path:
    data, out = tmp_path / "runs.csv", tmp_path / "fit.json"
    frame.to_csv(data, index=False)
    code, _, err = run_cli(capsys, "fit", str(data), "-o", str(out), "--grid", "coarse", "--workers", "1",
                           *extra)
    assert code == 0, err
    return out


# ----------------------------------------------------------------------------- the error model


def test_envelope_holds_the_quantile_and_keeps_the_slope_floor() -> None:
    x = np.repeat([0.5, 1.5, 3.0], 50)
    y = np.abs(np.random.default_rng(1).normal(0, 0.01 + 0.02 * x))
    c0, c1 = fit_envelope(x, y)
    assert 0.85 <= np.mean(y <= c0 + c1 * x) <= 0.95
    assert fit_envelope(x, np.full_like(x, 0.01))[1] == pytest.approx(SLOPE_FLOOR)  # flat errors: floor


def test_forecast_intervals_widen_with_the_n_factor() -> None:
    entry = {"data_range": {"N": [1e6, 1e8], "D": [5e6, 8e9], "D_over_N": [5.0, 80.0]},
             "forecast_error": {"c0": 0.01, "c1": 0.02, "basis": "test"}}
    widths, factors = [], []
    for n in (5e7, 1e8, 2e8, 1e9, 1e10):
        f = forecast(entry, 2.0, (1.95, 2.05), n, 20 * n)
        widths.append(f["interval"][1] - f["interval"][0])
        factors.append(f["N_factor"])
        assert f["interval"][0] < 1.95 and f["interval"][1] > 2.05  # wider than the bootstrap interval
    assert factors == pytest.approx([0.5, 1, 2, 10, 100])
    assert widths[0] == pytest.approx(widths[1])  # inside the data: the envelope's c0 only
    assert all(a < b for a, b in zip(widths[1:], widths[2:], strict=False))
    outside = forecast(entry, 2.0, None, 1e8, 1e8)  # D/N = 1, 5x below the fitted range: 2.3 doublings
    assert outside["relative_error"] == pytest.approx(0.01 + 0.02 * np.log2(5))


# ----------------------------------------------------------------------------- bitlaw fit, predict


def test_fit_with_fewer_than_four_sizes_states_the_default(capsys, tmp_path: Path) -> None:
    out = fit_cli(capsys, tmp_path, chinchilla_table(np.geomspace(1e6, 1e8, 3)))
    model = load_fit(out).entry()["forecast_error"]
    assert (model["c0"], model["c1"]) == (DEFAULT["c0"], DEFAULT["c1"])
    assert model["basis"].startswith("default for fits of < 4 sizes") and "3 sizes" in model["basis"]


def test_fit_measures_its_error_model_and_predict_json_keeps_the_contract(capsys, tmp_path: Path) -> None:
    out = fit_cli(capsys, tmp_path, chinchilla_table(np.geomspace(1e6, 1e9, 6), noise=0.01),
                  "--bootstrap", "40")
    entry = load_fit(out).entry()
    assert entry["forecast_error"]["basis"].startswith("backtest of this table: 6 sizes, 3 origin(s)")
    assert entry["data_range"]["D_over_N"] == pytest.approx([5, 80])
    code, text, _ = run_cli(capsys, "predict", str(out), "--N", "4e9", "--D", "8e10", "--json")
    assert code == 0
    doc = json.loads(text)
    assert set(doc) >= {"loss", "ci", "forecast"}
    f = doc["forecast"]
    assert set(f) >= {"interval", "relative_error", "N_factor", "D_over_N", "D_over_N_range", "basis"}
    assert f["N_factor"] == pytest.approx(4) and f["D_over_N"] == pytest.approx(20)
    assert f["D_over_N_range"] == pytest.approx([5, 80])
    assert f["interval"][0] < doc["ci"][0] <= doc["loss"] <= doc["ci"][1] < f["interval"][1]
    code, text, _ = run_cli(capsys, "predict", str(out), "--N", "4e9", "--D", "8e10")
    assert len(text.splitlines()) == 1 and "forecast interval" in text and "N factor 4" in text


def test_no_backtest_uses_the_default_and_says_so(capsys, tmp_path: Path) -> None:
    out = fit_cli(capsys, tmp_path, chinchilla_table(np.geomspace(1e6, 1e9, 5)), "--no-backtest")
    assert "--no-backtest" in load_fit(out).entry()["forecast_error"]["basis"]


# ----------------------------------------------------------------------------- recommend, verify plan


@pytest.fixture(scope="module")
def precision_fit(tmp_path_factory) -> Path:
    frame = simulate(KMEANS_TRUTH, np.geomspace(5e5, 3e7, 5), np.geomspace(1e8, 1e9, 3), bits=(1, 2, 4),
                     noise=0.0)
    tmp = tmp_path_factory.mktemp("fit")
    frame.to_csv(tmp / "runs.csv", index=False)
    out = tmp / "fit.json"
    assert main(["fit", str(tmp / "runs.csv"), "-o", str(out), "--law", "precision", "--by", "format",
                 "--grid", "coarse", "--workers", "1", "--no-backtest"]) == 0
    return out


def _recommend(fit: Path, c0: float, c1: float):
    fitfile = load_fit(fit)
    entry = {**fitfile.entry("kmeans"), "forecast_error": {"c0": c0, "c1": c1, "basis": "test"}}
    return recommend(source_from_fit(fitfile), 3e6, 1e9, resolve_arch("bitlaw"), [1, 2, 4], "kmeans",
                     entry=entry)


def test_recommend_is_undecided_when_the_margin_is_below_the_forecast_error(precision_fit: Path) -> None:
    decided = _recommend(precision_fit, 0.0, 0.0)
    assert decided.best is not None and decided.undecided is None
    margin = decided.margin["margin_nats"]
    assert margin > 0 and decided.margin["forecast_error_nats"] == 0
    # an error model whose error at these models exceeds the margin withdraws the winner
    undecided = _recommend(precision_fit, margin, 0.0)
    assert undecided.best is None and undecided.leader.bits == decided.leader.bits
    assert undecided.margin["forecast_error_nats"] > margin
    text = render_text([undecided], source_from_fit(load_fit(precision_fit)), "bitlaw")
    assert f"best: not decidable at this budget (margin {margin:.4f} < forecast error" in text
    assert "test it: bitlaw verify plan" in text and "--memory 3e+06 --tokens 1e+09" in text
    doc = to_json([undecided], source_from_fit(load_fit(precision_fit)), "bitlaw")
    assert doc["best"] is None and doc["undecided_reason"].startswith(f"margin {margin:.4f} < forecast error")
    assert doc["budgets"][0]["rows"][0]["forecast"]["basis"] == "test"


def test_verify_plan_records_the_verdict_before_training(capsys, tmp_path: Path, precision_fit: Path) -> None:
    runs = pd.read_csv(precision_fit.parent / "runs.csv")
    runs = runs.assign(N_quant=runs["N"], N_hp=0.0)  # shapes the family lacks: every contender is new
    runs = runs.assign(**{f"model.{k}": 0 for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim",
                                                     "vocab_size")})
    fit = json.loads(precision_fit.read_text())
    fit["fits"]["kmeans"]["forecast_error"] = {"c0": 0.5, "c1": 0.0, "basis": "test: wide"}
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps(fit))
    runs_path = tmp_path / "runs.csv"
    runs.to_csv(runs_path, index=False)
    code, out, err = run_cli(capsys, "verify", "plan", str(wide), "--runs", str(runs_path), "-o",
                             str(tmp_path / "v"), "--memory", "3MB", "--tokens", "1e9", "--arch", "bitlaw")
    assert code == 0, err
    plan = json.loads((tmp_path / "v" / "contenders.json").read_text())
    assert plan["predicted_winner"] is None and "< forecast error" in plan["undecided_reason"]
    assert all(c["forecast"]["basis"] == "test: wide" for c in plan["contenders"])
    assert "not decidable" in out


# ----------------------------------------------------------------------------- the backtest's score


def test_backtest_scores_the_interval_each_origin_would_state() -> None:
    table = prepare_table(chinchilla_table(np.geomspace(1e6, 1e9, 6), noise=0.005))
    result = backtest(table, BacktestOptions(("chinchilla",), grid="coarse", workers=1))
    score = result.summary[0]["forecast_interval"]
    assert score["n"] == len(result.predictions)
    assert [o["basis"] for o in score["per_origin"]] == ["default", "internal", "internal"]
    assert score["per_origin"][0]["c0"] == DEFAULT["c0"]
    assert score["coverage"] >= 0.9 and score["mean_half_width"] > 0
