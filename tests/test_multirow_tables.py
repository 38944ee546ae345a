"""Issue 26 item 6: tables from elsewhere.  Several rows per run (a run's checkpoints, one run at several D)
fit, and the bootstrap resamples the run as one unit; only a run repeated at the same D (format, bits) is
refused; --drop-early F drops each run's early rows and fit.json records it, so report and plot redo it.
One row per run (a `bitlaw gather` table) behaves as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitlaw.cli import main
from fit.data.table import prepare_table
from fit.errors import InputError
from fit.fitfile import load_fit
from fit.law import predict_loss
from fit.render.report import load_runs, section_data
from fit.solve.bootstrap import draw_counts
from fit.solve.resampling import bootstrap_units
from fit.study.plan import compute_cost, grid_table
from fit.study.verify import SHAPE_COLUMNS, Contender, measured

DATA = Path(__file__).parent / "data"
GEMSTONES = DATA / "gemstones_hot.jsonl"
GEM_COLUMNS = "N=params_active_precise,D=tokens,loss=final_loss,run=run_name"
TRUE = {"A": 400.0, "B": 2000.0, "E": 1.8, "alpha": 0.34, "beta": 0.37}
SIZES = np.geomspace(3e7, 1e9, 5)
FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # each run's checkpoints, as shares of its final D


def checkpoint_table(noise: float = 0.003) -> pd.DataFrame:
    """5 runs, each logged at 4 checkpoints (D/N = 5 .. 20): 20 rows, 5 runs."""
    rng = np.random.default_rng(0)
    rows = []
    for i, n in enumerate(SIZES):
        for share in FRACTIONS:
            d = 20 * n * share
            loss = float(predict_loss(TRUE, np.array([n]), np.array([d]))[0]) * np.exp(noise * rng.normal())
            rows.append({"name": f"run{i}", "params": n, "tokens": d, "val": loss})
    return pd.DataFrame(rows)


COLUMNS = {"N": "params", "D": "tokens", "loss": "val", "run": "name"}
CLI_COLUMNS = "N=params,D=tokens,loss=val,run=name"


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- several rows per run


def test_a_checkpoint_table_is_accepted_and_its_bootstrap_unit_is_the_run() -> None:
    table = prepare_table(checkpoint_table(), COLUMNS)
    assert len(table.frame) == 20
    units, name = bootstrap_units(table.frame)
    assert name == "run"
    assert len(np.unique(units)) == 5  # runs, not the 20 rows
    for run in table.frame["run"].unique():  # every row of a run is one unit
        assert len(np.unique(units[(table.frame["run"] == run).to_numpy()])) == 1
    counts = draw_counts(units, 50, seed=0)
    assert counts.shape == (50, 5)  # each resample draws 5 runs
    weights = counts[:, units]  # each row's weight in each resample: its run's draw count
    for run in table.frame["run"].unique():
        cols = weights[:, (table.frame["run"] == run).to_numpy()]
        assert (cols == cols[:, :1]).all()
    assert (weights.sum(axis=1) == 4 * 5).all()  # 5 runs drawn x 4 rows each


def test_a_checkpoint_table_fits_and_bootstraps_by_run(tmp_path: Path, capsys) -> None:
    checkpoint_table().to_csv(tmp_path / "ck.csv", index=False)
    code, out, err = run_cli(capsys, "fit", tmp_path / "ck.csv", "--columns", CLI_COLUMNS, "--bootstrap", 40,
                             "--workers", 1, "-o", tmp_path / "fit.json")  # fmt: skip
    assert code == 0, err
    assert "fit 'all': 20 points, 5 runs;" in out
    # the largest N is one run of 4 checkpoints
    assert "(4 points of 1 run held out)" in out
    assert "bootstrap: 40 resamples by run" in out
    doc = json.loads((tmp_path / "fit.json").read_text())
    entry = doc["fits"]["all"]
    assert (entry["n_points"], entry["n_runs"]) == (20, 5)
    assert entry["bootstrap_unit"] == "run" and doc["data"]["bootstrap_unit"] == "run"
    assert entry["extrapolation"]["n_runs"] == 1 and entry["extrapolation"]["n_points"] == 4
    assert entry["alpha"] == pytest.approx(TRUE["alpha"], abs=0.05)
    assert entry["bootstrap"]["alpha"][0] < entry["alpha"] < entry["bootstrap"]["alpha"][1]


def test_one_row_per_run_is_unchanged() -> None:
    """A gather table (one row per run): each row its own unit, runs = rows, no early rows to drop."""
    frame = checkpoint_table()
    frame["name"] = [f"r{i}" for i in range(len(frame))]
    table = prepare_table(frame, COLUMNS)
    units, name = bootstrap_units(table.frame)
    assert name == "run" and len(np.unique(units)) == len(frame)
    assert table.n_dropped_early == 0 and table.drop_early == 0.0


# ----------------------------------------------------------------------------- repeats


def test_a_run_repeated_at_the_same_D_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    frame = checkpoint_table()
    doubled = pd.concat([frame, frame.iloc[[5, 6]]], ignore_index=True)
    with pytest.raises(InputError) as caught:
        prepare_table(doubled, COLUMNS)
    message = str(caught.value)
    assert "\n" not in message
    assert "column 'run' (from 'name'): 2 of 22 rows repeat a run at the same D" in message
    assert "first: run 'run1' at D 7.20843e+08" in message and "data rows 6 and 21" in message
    doubled.to_csv(tmp_path / "doubled.csv", index=False)
    code, out, err = run_cli(capsys, "fit", tmp_path / "doubled.csv", "--columns", CLI_COLUMNS,
                             "-o", tmp_path / "f.json")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "was a sweep gathered twice?" in err
    assert not (tmp_path / "f.json").exists()


def test_format_and_bits_tell_rows_of_one_run_at_one_D_apart() -> None:
    """The same run at the same D in two formats or at two bit widths is two points, not a repeat."""
    frame = checkpoint_table().assign(format="kmeans", bits=2)
    other = frame.assign(bits=4)
    table = prepare_table(pd.concat([frame, other], ignore_index=True), COLUMNS)
    assert len(table.frame) == 40
    with pytest.raises(InputError, match=r"repeat a run at the same D, format, bits \(first: run 'run0' at "
                       r"D 1.5e\+08, format 'kmeans', bits 2, data rows 1 and 21"):  # fmt: skip
        prepare_table(pd.concat([frame, frame.iloc[:1]], ignore_index=True), COLUMNS)


# ----------------------------------------------------------------------------- --drop-early


def test_drop_early_keeps_each_runs_late_rows() -> None:
    table = prepare_table(checkpoint_table(), COLUMNS, drop_early=0.5)
    assert (table.drop_early, table.n_dropped_early, len(table.frame)) == (0.5, 5, 15)  # the 0.25 rows
    largest = table.frame.groupby("run")["D"].transform("max")
    assert (table.frame["D"] >= 0.5 * largest).all()
    assert set((table.frame["D"] / largest).round(6)) == {0.5, 0.75, 1.0}
    # relative to each run's own largest D, not the table's: run0's rows are all below 0.5 x run4's largest D
    assert (table.frame["run"] == "run0").sum() == 3


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_drop_early_outside_0_to_1_is_refused(fraction: float) -> None:
    with pytest.raises(InputError, match=r"--drop-early: .* is not allowed; give a fraction F with 0 <= F"):
        prepare_table(checkpoint_table(), COLUMNS, drop_early=fraction)


def test_drop_early_needs_a_run_column() -> None:
    columns = {k: v for k, v in COLUMNS.items() if k != "run"}
    with pytest.raises(InputError, match="--drop-early: needs a run column"):
        prepare_table(checkpoint_table(), columns, drop_early=0.5)


def test_drop_early_is_printed_recorded_and_redone_by_the_report(tmp_path: Path, capsys) -> None:
    frame = checkpoint_table().assign(format="none", P=16.0)
    frame.to_csv(tmp_path / "ck.csv", index=False)
    code, out, err = run_cli(capsys, "fit", tmp_path / "ck.csv", "--columns", CLI_COLUMNS, "--drop-early",
                             0.5, "-o", tmp_path / "fit.json")  # fmt: skip
    assert code == 0, err
    assert "--drop-early 0.5: dropped 5 of 20 rows (each run's rows below 0.5 x its largest D)" in out
    assert "fit 'all': 15 points, 5 runs;" in out
    fitfile = load_fit(tmp_path / "fit.json")
    data = fitfile.data["data"]
    assert (data["drop_early"], data["rows_dropped_early"], data["rows_used"]) == (0.5, 5, 15)
    _, runs = load_runs(fitfile, tmp_path / "ck.csv")  # report and plot read the table through this
    assert len(runs) == 15 and runs["D"].min() >= 0.5 * 20 * SIZES[0]
    # the report counts runs per format and bit width, not rows
    assert "| none | 5 |" in "\n".join(section_data(frame, runs, tmp_path / "ck.csv"))


# ----------------------------------------------------------------------------- plan and verify


def test_plan_counts_a_grids_runs_not_its_rows() -> None:
    frame = checkpoint_table().rename(columns={"params": "N", "tokens": "D", "name": "run"})
    grid = grid_table(frame.drop(columns="val").assign(format="kmeans", P=2.25))
    cost = compute_cost(grid)
    assert (cost["runs"], cost["trunks"]) == (5, 5)
    assert cost["tokens"] == pytest.approx(sum(20 * SIZES))  # each run trains once, to its largest D


def test_verify_finds_a_contenders_row_at_its_D_among_checkpoints() -> None:
    shape = {key: 64 for key in SHAPE_COLUMNS}
    rows = [{**{col: 64 for col in SHAPE_COLUMNS.values()}, "format": "kmeans", "bits": 2, "run": "c2",
             "D": d, "loss": loss} for d, loss in ((1e6, 3.0), (2e6, 2.5), (4e6, 2.2))]  # fmt: skip
    contender = Contender(2, "kmeans", "m", shape, 1000, 1.0, 2.4, None, False, 2.25)
    assert measured(contender, 2e6, [pd.DataFrame(rows)]) == (2.5, None, "c2")
    assert measured(contender, 4e6, [pd.DataFrame(rows)])[0] == 2.2


# ----------------------------------------------------------------------------- Gemstones (public table)


@pytest.mark.integration  # a public table through the CLI
def test_gemstones_fits_with_chinchilla(tmp_path: Path, capsys) -> None:
    """220 rows, 10 checkpoints of each of 22 runs; the published δ = 1e-3 fit (tests/data/README.md)."""
    code, out, err = run_cli(capsys, "fit", GEMSTONES, "--columns", GEM_COLUMNS, "--law", "chinchilla",
                             "-o", tmp_path / "gem.json")  # fmt: skip
    assert code == 0, err
    assert "fit 'all': 220 points, 22 runs;" in out
    assert "(10 points of 1 run held out)" in out
    entry = json.loads((tmp_path / "gem.json").read_text())["fits"]["all"]
    assert entry["objective"] <= 0.0019816129 + 1e-9
    assert entry["alpha"] == pytest.approx(0.29287, abs=0.003)
    assert entry["beta"] == pytest.approx(0.71287, abs=0.01)
    assert entry["E"] == pytest.approx(2.1431, abs=0.01)


@pytest.mark.integration  # a public table through the CLI
def test_gemstones_backtests(tmp_path: Path, capsys) -> None:
    """Rows of one run stay together (one N per run); --drop-early is printed and recorded."""
    args = ("backtest", GEMSTONES, "--columns", GEM_COLUMNS, "--law", "chinchilla", "--grid", "coarse",
            "--min-sizes", 18, "--drop-early", 0.5)  # fmt: skip
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "--drop-early 0.5: dropped 88 of 220 rows (each run's rows below 0.5 x its largest D)" in out
    assert "backtest: 22 sizes" in out
    code, out, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["data"]["drop_early"], doc["data"]["rows_dropped_early"], doc["data"]["rows_used"]) == (
        0.5, 88, 132)
    assert doc["n_predictions"] > 0
