"""Every bad input to `bitlaw fit` and `bitlaw predict`: one line naming the field, exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitlaw import cli
from fit.data.simulate import KMEANS_TRUTH, simulate


@pytest.fixture()
def runs(tmp_path: Path) -> pd.DataFrame:
    return simulate(
        KMEANS_TRUTH, np.geomspace(1e6, 1e9, 4), np.geomspace(1e8, 1e10, 3), bits=(2, 4), noise=0.01
    )


def fit_error(capsys, tmp_path: Path, frame_or_path, *flags: str, suffix: str = ".csv") -> str:
    """Run `bitlaw fit` on a table; assert exit 2 and one stderr line; return that line."""
    if isinstance(frame_or_path, pd.DataFrame):
        path = tmp_path / f"runs{suffix}"
        if suffix == ".csv":
            frame_or_path.to_csv(path, index=False)
        elif suffix == ".jsonl":
            frame_or_path.to_json(path, orient="records", lines=True)
        else:
            frame_or_path.to_parquet(path)
    else:
        path = frame_or_path
    out = tmp_path / "fit.json"
    code = cli.main(["fit", str(path), "-o", str(out), "--grid", "coarse", *flags])
    captured = capsys.readouterr()
    assert code == 2, captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert not out.exists()  # nothing half-written
    return lines[0]


def test_missing_column_names_it_and_the_flag(capsys, tmp_path, runs) -> None:
    err = fit_error(capsys, tmp_path, runs.drop(columns=["loss"]))
    assert "'loss'" in err and "--columns loss=" in err


def test_mapped_column_missing(capsys, tmp_path, runs) -> None:
    err = fit_error(capsys, tmp_path, runs, "--columns", "N=params")
    assert "'N' (from 'params') not found" in err


def test_precision_law_needs_P_and_by_format_needs_format(capsys, tmp_path, runs) -> None:
    assert "'P'" in fit_error(capsys, tmp_path, runs.drop(columns=["P"]), "--law", "precision")
    assert "'format'" in fit_error(
        capsys, tmp_path, runs.drop(columns=["format"]), "--law", "precision", "--by", "format"
    )


def test_non_numeric_values_are_counted(capsys, tmp_path, runs) -> None:
    frame = runs.astype({"loss": object})
    frame.loc[[1, 4], "loss"] = "oops"
    err = fit_error(capsys, tmp_path, frame)
    assert "'loss': 2 of 36 rows are not numeric" in err and "--drop-invalid" in err


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_nan_and_inf_are_counted_in_every_format(capsys, tmp_path, runs, suffix) -> None:
    frame = runs.copy()
    frame.loc[[0, 2, 3], "D"] = [np.nan, np.inf, np.nan]
    err = fit_error(capsys, tmp_path, frame, suffix=suffix)
    assert "'D': 3 of 36 rows are missing, NaN or inf" in err


@pytest.mark.parametrize("column", ["N", "D", "loss", "P"])
def test_non_positive_values_are_counted(capsys, tmp_path, runs, column) -> None:
    frame = runs.copy()
    frame.loc[[5], column] = 0.0
    frame.loc[[6], column] = -1.0
    err = fit_error(capsys, tmp_path, frame, "--law", "precision")
    assert f"'{column}': 2 of 36 rows are not positive" in err


def test_fewer_than_three_distinct_sizes(capsys, tmp_path, runs) -> None:
    frame = runs[runs["N"] <= sorted(runs["N"].unique())[1]]
    assert "'N': only 2 distinct value(s)" in fit_error(capsys, tmp_path, frame)


def test_empty_file_and_header_only_file(capsys, tmp_path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in fit_error(capsys, tmp_path, empty)
    header = tmp_path / "header.csv"
    header.write_text("N,D,loss\n")
    assert "0 rows" in fit_error(capsys, tmp_path, header)


def test_unknown_suffix_missing_file_and_corrupt_jsonl(capsys, tmp_path) -> None:
    (tmp_path / "runs.xlsx").write_text("x")
    assert "unknown file type '.xlsx'" in fit_error(capsys, tmp_path, tmp_path / "runs.xlsx")
    assert "no such file" in fit_error(capsys, tmp_path, tmp_path / "absent.csv")
    (tmp_path / "bad.jsonl").write_text('{"N": 1}\n{"N": \n')
    assert "bad.jsonl: line 2 is not valid JSON" in fit_error(capsys, tmp_path, tmp_path / "bad.jsonl")


def test_bad_columns_spec_and_where(capsys, tmp_path, runs) -> None:
    assert "unknown name 'size'" in fit_error(capsys, tmp_path, runs, "--columns", "size=N")
    assert "is not NAME=COLUMN" in fit_error(capsys, tmp_path, runs, "--columns", "N")
    assert "not a valid filter" in fit_error(capsys, tmp_path, runs, "--where", "N >> ")
    assert "kept 0 of 36 rows" in fit_error(capsys, tmp_path, runs, "--where", "N < 0")


def test_bad_numbers_and_option_combinations(capsys, tmp_path, runs) -> None:
    assert "--delta" in fit_error(capsys, tmp_path, runs, "--delta", "0")
    assert "--bootstrap" in fit_error(capsys, tmp_path, runs, "--bootstrap", "-3")
    for too_few in ("1", "39"):  # a 95 % percentile interval needs >= 40 resamples (one draw per tail)
        assert "at least 40" in fit_error(capsys, tmp_path, runs, "--bootstrap", too_few)
    assert "--shared needs --by format" in fit_error(capsys, tmp_path, runs, "--shared")
    assert "--shared needs --law precision" in fit_error(capsys, tmp_path, runs, "--by", "format", "--shared")


def test_drop_invalid_drops_counts_and_records(capsys, tmp_path, runs) -> None:
    frame = runs.copy()
    frame.loc[[0, 1], "loss"] = np.nan
    frame.loc[[2], "N"] = -5
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "fit.json"
    assert cli.main(["fit", str(path), "-o", str(out), "--grid", "coarse", "--drop-invalid"]) == 0
    printed = capsys.readouterr().out
    assert "33 rows (3 dropped" in printed
    doc = json.loads(out.read_text())
    assert doc["data"]["dropped"] == {"N: not positive": 1, "loss: missing, NaN or inf": 2}
    assert doc["fits"]["all"]["n_points"] == 33


def test_flagged_fit_still_writes_and_prints_flags(capsys, tmp_path, runs) -> None:
    path = tmp_path / "quant_only.csv"
    runs[runs["format"] != "none"].to_csv(path, index=False)
    out = tmp_path / "fit.json"
    assert cli.main(["fit", str(path), "-o", str(out), "--law", "precision", "--grid", "coarse"]) == 0
    assert "FLAG no_16bit_anchor" in capsys.readouterr().out
    assert any(f.startswith("no_16bit_anchor") for f in json.loads(out.read_text())["fits"]["all"]["flags"])


def test_predict_prints_loss_and_ci_and_rejects_bad_input(capsys, tmp_path, runs) -> None:
    path = tmp_path / "runs.csv"
    runs.to_csv(path, index=False)
    out = tmp_path / "fit.json"
    args = (
        f"fit {path} -o {out} --law precision --by format --grid coarse --bootstrap 40 --workers 1 --progress"
    )
    assert cli.main(args.split()) == 0
    captured = capsys.readouterr()
    assert "bootstrap [" in captured.err and "40/40" in captured.err  # the progress bar, on stderr only
    assert "95% CI" in captured.out
    assert (
        cli.main(["predict", str(out), "--N", "1e8", "--D", "1e9", "--P", "2.25", "--format", "kmeans"]) == 0
    )
    printed = capsys.readouterr().out
    loss = float(printed.split()[0])
    truth = simulate(KMEANS_TRUTH, [1e8], [1e9], bits=(2,), anchor=False)["loss"].iloc[0]
    assert loss == pytest.approx(truth, rel=0.02) and "95% CI" in printed and "40 bootstrap" in printed
    for bad, needle in [
        (["--N", "abc", "--D", "1e9", "--P", "2"], "--N: 'abc' is not a number"),
        (["--N", "1e8", "--D", "-1", "--P", "2"], "--D: '-1' is not allowed"),
        (["--N", "1e8", "--D", "1e9", "--format", "kmeans"], "--P:"),
        (["--N", "1e8", "--D", "1e9", "--P", "2", "--format", "fp8"], "allowed: kmeans"),
    ]:
        assert cli.main(["predict", str(out), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
    assert cli.main(["predict", str(tmp_path / "nope.json"), "--N", "1", "--D", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fit_help_is_fast_and_does_not_import_scipy() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); from bitlaw import cli\n"
        "try:\n    cli.main(['fit', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'scipy' not in sys.modules and 'pandas' not in sys.modules, 'heavy import'\n"
        "print(time.perf_counter() - t, file=sys.stderr)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--bootstrap" in out.stdout
    assert time.perf_counter() - start < 5  # generous for a loaded CI box; typically ~0.05 s


def test_columns_the_law_does_not_use_are_not_validated(capsys, tmp_path, runs) -> None:
    frame = runs.copy()
    frame.loc[[0], "P"] = np.nan  # irrelevant to a Chinchilla fit
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    assert cli.main(["fit", str(path), "-o", str(tmp_path / "chinchilla.json"), "--grid", "coarse"]) == 0
    assert "'P': 1 of 36 rows" in fit_error(capsys, tmp_path, frame, "--law", "precision")
