"""--where is data: a small grammar parsed by fit.data.where, never evaluated.  Every filter that reads
(comparisons, in lists, and/or/not, backticks) keeps the right rows; code (calls, attributes, __import__,
os.system), in --where or in a hand-edited fit.json, is refused with one line and never runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitlaw import cli
from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.data.table import apply_where, prepare_table
from fit.data.where import And, Column, Compare, Literal, parse_where
from fit.errors import InputError

FRAME = pd.DataFrame({
    "N": [1e6, 2e6, 4e6, 8e6],
    "format": ["kmeans", "uniform", "none", "kmeans"],
    "model.d_model": [64, 128, 64, 32],
    "quant.binary_mean": [False, True, False, False],
})  # fmt: skip


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("N > 2e6", [2, 3]),
        ("N >= 2e6 and format == 'kmeans'", [3]),
        ('format != "kmeans"', [1, 2]),
        ("`model.d_model` >= 64", [0, 1, 2]),
        ("format in ['kmeans', 'none']", [0, 2, 3]),
        ("format not in ('kmeans',)", [1, 2]),
        ("not (N < 3e6) or N == 1e6", [0, 2, 3]),
        ("1e6 < N <= 4e6", [1, 2]),
        ("N > -1 & ~(format == 'none') | N == 4e6", [0, 1, 2, 3]),  # the former DataFrame.query spellings
        ("(N < 2e6 or N > 4e6) and `model.d_model` < 64", [3]),
        ("`quant.binary_mean` == True", [1]),
        ("N in [1000000, 8e6]", [0, 3]),
    ],
)
def test_each_form_keeps_the_right_rows(text: str, kept: list[int]) -> None:
    assert list(apply_where(FRAME, text).index) == kept


def test_the_tree_is_plain_data() -> None:
    assert parse_where("1 < N <= 4") == And(
        (Compare(Literal(1.0), "<", Column("N")), Compare(Column("N"), "<=", Literal(4.0)))
    )


PAYLOADS = [
    "__import__('os').system('touch {marker}')",
    "@pd.io.common.os.system('touch {marker}')",
    "N > 0 and system('touch {marker}')",
    "N.__class__.__init__.__globals__",
    "`N`.mro()",
    "lambda: open('{marker}', 'w')",
    "N > 0; import os",
    "N[0] > 0",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_code_in_where_is_refused_and_never_runs(payload: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(InputError) as err:
        apply_where(FRAME, payload.format(marker=marker))
    assert str(err.value).startswith("--where ") and "grammar:" in str(err.value)
    assert "\n" not in str(err.value) and not marker.exists()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("N >> 1", "not a valid filter"),
        ("N = 1", "equality is =="),
        ("N > 1 N", "expected and / or or the end"),
        ("N in [1, 2", "expected ']'"),
        ("(" * 200 + "N > 1" + ")" * 200, "nested deeper than"),
        ("   ", "is not a filter"),
        ("format < 3", "cannot compare column 'format' and 3.0 with <"),
    ],
)
def test_bad_syntax_is_one_line_naming_the_grammar(text: str, says: str) -> None:
    with pytest.raises(InputError) as err:
        apply_where(FRAME, text)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_column_lists_the_columns() -> None:
    with pytest.raises(InputError) as err:
        apply_where(FRAME, "d_model > 1")
    assert str(err.value) == (
        "--where 'd_model > 1': unknown column 'd_model' (did you mean `model.d_model`?); columns: N, "
        "format, model.d_model, quant.binary_mean"
    )


def test_where_runs_on_the_inputs_own_names_before_mapping() -> None:
    runs = simulate(KMEANS_TRUTH, np.geomspace(1e6, 1e9, 4), np.geomspace(1e8, 1e10, 3), bits=(2, 4))
    table = prepare_table(runs, where="bits == 4 or format == 'none'", require=("N", "D", "loss", "P"))
    assert set(table.frame["bits"]) == {4, 16} and table.n_rows_where == len(table.frame) == 24


# ----------------------------------------------------------------------------- through the CLI and fit.json
@pytest.fixture()
def fitted(tmp_path: Path) -> tuple[Path, Path]:
    runs = simulate(KMEANS_TRUTH, np.geomspace(1e6, 1e9, 4), np.geomspace(1e8, 1e10, 3), bits=(2, 4),
                    noise=0.01)  # fmt: skip
    data = tmp_path / "runs.csv"
    runs.to_csv(data, index=False)
    out = tmp_path / "fit.json"
    code = cli.main(["fit", str(data), "-o", str(out), "--law", "precision", "--grid", "coarse",
                     "--where", "`bits` >= 2 & format in ['kmeans', 'none']"])  # fmt: skip
    assert code == 0
    return data, out


def one_error_line(capsys, argv: list[str]) -> str:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_fit_refuses_code_in_where(capsys, fitted, tmp_path: Path) -> None:
    data, _ = fitted
    marker = tmp_path / "ran"
    line = one_error_line(capsys, ["fit", str(data), "-o", str(tmp_path / "other.json"), "--where",
                                   f"@pd.io.common.os.system('touch {marker}') == 0"])  # fmt: skip
    assert "--where" in line and "not a valid filter" in line
    assert not marker.exists() and not (tmp_path / "other.json").exists()


def test_a_stored_filter_is_reapplied_as_data(fitted) -> None:
    from fit.answer.caveats import fit_rows
    from fit.fitfile import load_fit

    data, out = fitted
    doc = json.loads(out.read_text())
    assert doc["data"]["where"] == "`bits` >= 2 & format in ['kmeans', 'none']"
    assert len(fit_rows(load_fit(out), data)) == doc["data"]["rows_after_where"] == 36


@pytest.mark.parametrize("command", ["predict", "report", "plot"])
def test_code_in_a_hand_edited_fit_json_never_runs(command: str, capsys, fitted, tmp_path: Path) -> None:
    data, out = fitted
    marker = tmp_path / "ran"
    doc = json.loads(out.read_text())
    # DataFrame.query ran this (pandas is `pd` where the filter was applied): the file appeared
    doc["data"]["where"] = f"N > 0 or @pd.io.common.os.system('touch {marker}') == 0"
    doc["fits"]["all"].pop("data_range", None)  # so predict would re-read the data file through the filter
    out.write_text(json.dumps(doc))
    argv = {
        "predict": ["predict", str(out), "--N", "1e9", "--D", "1e10", "--P", "4.25"],
        "report": ["report", str(out), "--data", str(data), "-o", str(tmp_path / "report")],
        "plot": ["plot", str(out), "--data", str(data), "-o", str(tmp_path / "plots")],
    }[command]
    line = one_error_line(capsys, argv)
    assert f"fit file {out}: key 'data.where'" in line and "not a valid filter" in line
    assert not marker.exists() and not (tmp_path / "report").exists() and not (tmp_path / "plots").exists()
