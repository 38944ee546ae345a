"""The report's forecast intervals (fit/render/report_forecast.py) and the seed spread a winner's margin
must also exceed (fit/solve/seeds.py, fit/answer/recommend.py): issue 26 items 3 and 4."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitlaw.cli import main
from fit.answer.fit_source import source_from_fit
from fit.answer.recommend import recommend
from fit.answer.shapes import resolve_arch
from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.fitfile import load_fit
from fit.render.recommend_text import render_text
from fit.solve.seeds import seed_spread

# whole fits and reports through the CLI: the unit tier leaves them out
pytestmark = pytest.mark.integration

SIZES = np.geomspace(5e5, 3e7, 5)
TOKENS = np.geomspace(1e8, 1e9, 3)


def _fit(tmp: Path, frame: pd.DataFrame, *extra: str) -> Path:
    frame.to_csv(tmp / "runs.csv", index=False)
    out = tmp / "fit.json"
    assert main(["fit", str(tmp / "runs.csv"), "-o", str(out), "--grid", "coarse", "--workers", "1",
                 *extra]) == 0
    return out


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A precision table with three seeds at every point, loss noise 0.01 nats (additive)."""
    base = simulate(KMEANS_TRUTH, SIZES, TOKENS, bits=(1, 2, 4), noise=0.0)
    rng = np.random.default_rng(3)
    frames = []
    for seed in range(3):
        copy = base.assign(seed=seed, run=base["run"] + f"-s{seed}")
        copy["loss"] = copy["loss"] + 0.01 * rng.standard_normal(len(copy))
        frames.append(copy)
    frame = pd.concat(frames, ignore_index=True)
    tmp = tmp_path_factory.mktemp("seeded")
    return _fit(tmp, frame, "--law", "precision", "--by", "format", "--no-backtest"), frame


def test_seed_spread_is_the_pooled_std_of_loss_at_a_point() -> None:
    frame = pd.DataFrame({"N": [1, 1, 1, 2, 2, 3], "D": [5, 5, 5, 5, 5, 5], "seed": [0, 1, 2, 0, 1, 0],
                          "loss": [3.0, 3.2, 3.4, 2.0, 2.1, 1.0]})
    got = seed_spread(frame)
    # point N=1: var 0.04 with 2 dof; N=2: var 0.005 with 1 dof; N=3 has no repeat
    assert got["nats"] == pytest.approx(math.sqrt((0.04 * 2 + 0.005) / 3))
    assert (got["points"], got["rows"]) == (2, 5)
    assert seed_spread(frame.iloc[[0, 3, 5]]) is None  # no point repeats: no spread to state


def test_fit_records_the_seed_spread_of_its_rows(seeded, capsys) -> None:
    fit, frame = seeded
    entry = json.loads(fit.read_text())["fits"]["kmeans"]
    spread = entry["seed_spread"]
    rows = frame[frame["format"].isin(["kmeans", "none"])]  # the 16-bit anchors join the kmeans fit
    want = rows.groupby(["format", "P", "N", "D"])["loss"].std(ddof=1)
    assert spread["nats"] == pytest.approx(math.sqrt((want ** 2).mean()))
    assert spread["points"] == len(want) and spread["rows"] == len(rows)
    assert 0.006 < spread["nats"] < 0.014  # the 0.01 nats it was made with


def test_fit_without_repeats_records_no_seed_spread(tmp_path: Path) -> None:
    frame = simulate(KMEANS_TRUTH, SIZES, TOKENS, bits=(1, 2, 4), noise=0.0)
    fit = _fit(tmp_path, frame, "--law", "precision", "--by", "format", "--no-backtest")
    assert "seed_spread" not in json.loads(fit.read_text())["fits"]["kmeans"]


def _recommend(fit: Path, spread: float | None, record: float | None = None):
    fitfile = load_fit(fit)
    entry = {**fitfile.entry("kmeans"), "forecast_error": {"c0": 0.0, "c1": 0.0, "basis": "test: exact"}}
    if record is not None:
        entry["seed_spread"] = {"nats": record, "points": 1, "rows": 2, "basis": "test"}
    return recommend(source_from_fit(fitfile), 3e6, 1e9, resolve_arch("bitlaw"), [1, 2, 4], "kmeans",
                     entry=entry, seed_spread=spread)


def test_a_margin_below_the_seed_spread_is_undecided(seeded) -> None:
    fit, _ = seeded
    decided = _recommend(fit, 0.0)
    margin = decided.margin["margin_nats"]
    assert decided.best is not None and margin > 0
    # a forecast error of 0 and a seed spread s: the error is sqrt(2)·s, one s per contender
    just_below = margin / math.sqrt(2) * 0.99
    assert _recommend(fit, just_below).best is not None
    undecided = _recommend(fit, margin / math.sqrt(2) * 1.01)
    assert undecided.best is None and undecided.leader.bits == decided.leader.bits
    assert undecided.margin["forecast_error_nats"] == pytest.approx(margin * 1.01)
    assert "not decidable" in render_text([undecided], source_from_fit(load_fit(fit)), "bitlaw")
    # without an explicit spread, recommend takes the one fit.json records
    recorded = _recommend(fit, None, record=margin)
    assert recorded.best is None and recorded.margin["seed_spread_nats"] == margin
    assert _recommend(fit, None).margin["seed_spread_nats"] == pytest.approx(
        load_fit(fit).entry("kmeans")["seed_spread"]["nats"])


# ----------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    """A precision fit of 5 sizes with its own error model (the internal backtest)."""
    frame = simulate(KMEANS_TRUTH, SIZES, TOKENS, bits=(1, 2, 4), noise=0.003, seed=1)
    return _fit(tmp_path_factory.mktemp("measured"), frame, "--law", "precision", "--by", "format")


def _report(fit: Path, out: Path, capsys) -> str:
    code = main(["report", str(fit), "--data", str(fit.parent / "runs.csv"), "-o", str(out), "--memory",
                 "3MB,200MB", "--tokens", "1e9", "--arch", "bitlaw"])
    assert code == 0, capsys.readouterr().err
    return (out / "report.md").read_text()


def _table(section: str) -> list[list[str]]:
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in rows]


def test_report_gives_each_recommendation_its_forecast_interval(
    measured: Path, tmp_path: Path, capsys
) -> None:
    report = _report(measured, tmp_path / "r", capsys)
    entry = load_fit(measured).entry("kmeans")
    section = report.split("## Best bit width by memory budget")[1].split("\n## ")[0]
    kmeans = section.split("### kmeans")[1]
    header, *rows = _table(kmeans)
    assert header[6:9] == ["forecast interval", "N factor", "D/N (data range)"]
    assert len(rows) == 2
    n_max = entry["data_range"]["N"][1]
    for row in rows:
        lo, hi = (float(v) for v in row[6].split("]")[0].strip("[").split(", "))
        point = float(row[5].split(" ")[0])
        assert lo <= point <= hi  # the forecast interval holds the point (c0 may be 0 inside the data)
        assert row[7].endswith("×") and float(row[7][:-1]) > 0
        assert " [" in row[8] and ("in" in row[8] or "outside" in row[8])
    # 200 MB holds a model beyond the data (l220m), 3 MB one inside it: a larger N factor, a wider interval
    widths = [float(r[6].split("(±")[1].rstrip("%)")) for r in rows]
    assert float(rows[1][7][:-1]) > float(rows[0][7][:-1]) > 0 and widths[1] > widths[0]
    assert float(rows[1][7][:-1]) > 1.0 and n_max > 0
    # the basis, once per fit, names the measured model
    c0 = entry["forecast_error"]["c0"]
    assert kmeans.count("Forecast intervals:") == 1 and f"{c0:.4f} + " in kmeans
    assert entry["forecast_error"]["basis"] in kmeans


def test_report_extrapolation_states_the_error_at_its_factor(measured: Path, tmp_path: Path, capsys) -> None:
    report = _report(measured, tmp_path / "r", capsys)
    section = report.split("## Extrapolation")[1].split("\n## ")[0]
    header, *rows = _table(section)
    assert header[5:8] == ["N factor", "stated forecast error", "max APE within it"]
    row = next(r for r in rows if r[0] == "kmeans")
    assert row[5] == f"{SIZES[-1] / SIZES[-2]:.3g}×"
    assert row[6].startswith("±") and row[7] in ("yes", "**no**")


def test_an_older_fit_says_it_has_no_error_model(measured: Path, tmp_path: Path, capsys) -> None:
    doc = json.loads(measured.read_text())
    for entry in doc["fits"].values():
        entry.pop("forecast_error")
    older = measured.parent / "older.json"
    older.write_text(json.dumps(doc))
    report = _report(older, tmp_path / "r", capsys)
    kmeans = report.split("## Best bit width by memory budget")[1].split("### kmeans")[1].split("\n## ")[0]
    assert "no forecast error model (refit with this bitlaw)" in kmeans
    assert "default |log error| <= 0.03 + 0.04 per doubling" in kmeans
    header, *rows = _table(kmeans)
    assert all(r[6].startswith("[") for r in rows)  # the default's intervals are still given
