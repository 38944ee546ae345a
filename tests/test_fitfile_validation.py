"""fit.json is validated on load, its --data must be the fitted table, and the table itself must be one a
fit can trust: a hand-edited value, a foreign table, a 1e-300 loss, a P that contradicts its bits, a
format's spelling and a trunk count each end in a true answer or one line (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitlaw import cli
from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.fitfile import check_data_is_fitted, load_fit

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ["fit.json", "fit_efficiency.json", "fit_coupled.json"]


def one_error_line(capsys, argv: list[str]) -> str:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def small_runs() -> pd.DataFrame:
    return simulate(KMEANS_TRUTH, np.geomspace(1e6, 1e9, 4), np.geomspace(1e8, 1e10, 3), bits=(2, 4),
                    noise=0.01)  # fmt: skip


@pytest.fixture(scope="module")
def fitted_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One fit for the module (a fit per test was half of this file's time)."""
    where = tmp_path_factory.mktemp("fitted")
    data = where / "runs.csv"
    small_runs().to_csv(data, index=False)
    out = where / "fit.json"
    assert cli.main(["fit", str(data), "-o", str(out), "--law", "precision", "--grid", "coarse"]) == 0
    return data, out


@pytest.fixture()
def fitted(fitted_once: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """The module's table and fit.json, copied into this test's dir, which a test may edit."""
    copies = tmp_path / "runs.csv", tmp_path / "fit.json"
    for source, copy in zip(fitted_once, copies, strict=True):
        shutil.copyfile(source, copy)
    return copies


# ----------------------------------------------------------------------------- hand-edited fit.json
def fit_all(**changes):
    return lambda doc: doc["fits"]["all"].update(changes)


EDITS = [
    (fit_all(gamma=0.0), "fit 'all': key 'gamma' is 0.0; allowed: a finite number > 0"),
    (fit_all(gamma=-2.0), "fit 'all': key 'gamma' is -2.0; allowed: a finite number > 0"),
    (lambda doc: doc["fits"]["all"].pop("gamma"), "fit 'all' lacks parameters gamma (a precision-law fit"),
    (fit_all(alpha="0.3"), "fit 'all': key 'alpha' is '0.3'; allowed: a finite number"),
    (fit_all(A=None), "fit 'all': key 'A' is None; allowed: a finite number"),
    (fit_all(beta=-0.1), "fit 'all': key 'beta' is -0.1; allowed: a finite number >= 0"),
    (lambda doc: doc.update(law="quadratic"), "key 'law' is 'quadratic'; allowed: chinchilla, precision"),
    (fit_all(bootstrap_samples={"alpha": ["x"]}), "fit 'all': key 'bootstrap_samples' is not a list of"),
    (lambda doc: doc["data"].update(where="N > 0; rm -rf"), "key 'data.where' 'N > 0; rm -rf': not a valid"),
]


@pytest.mark.parametrize(("edit", "says"), EDITS)
def test_a_hand_edited_value_is_one_line_naming_file_fit_and_key(capsys, fitted, edit, says) -> None:
    _, out = fitted
    doc = json.loads(out.read_text())
    edit(doc)
    out.write_text(json.dumps(doc))
    line = one_error_line(capsys, ["predict", out, "--N", "1e9", "--D", "1e10", "--P", "4.25"])
    assert line.startswith(f"bitlaw predict: error: fit file {out}") and says in line


def test_a_nan_parameter_is_refused_not_answered(capsys, fitted) -> None:
    _, out = fitted
    out.write_text(out.read_text().replace('"E": ', '"E": NaN, "was_E": ', 1))
    assert "key 'E' is nan; allowed: a finite number" in one_error_line(
        capsys, ["predict", out, "--N", "1e9", "--D", "1e10", "--P", "4.25"]
    )


def test_an_efficiency_fit_needs_positive_effs(capsys, tmp_path) -> None:
    path = tmp_path / "eff.json"
    entry = {**KMEANS_TRUTH, "eff": {"2.25": -0.5}}
    path.write_text(json.dumps({"law": "efficiency", "fits": {"kmeans": entry}}))
    assert "fit 'kmeans': key 'eff.2.25' is -0.5; allowed: a finite number > 0" in one_error_line(
        capsys, ["predict", path, "--N", "1e9", "--D", "1e10", "--P", "2.25"]
    )


@pytest.mark.parametrize("name", COMMITTED)
def test_every_committed_fit_loads(name: str) -> None:
    fit = load_fit(ROOT / "results" / "demo" / name)
    assert fit.formats == ["kmeans", "uniform"]
    assert fit.data["data"]["path"] == "results/demo/runs.csv"  # relative: no developer machine's path


# ----------------------------------------------------------------------------- --data: the fitted table only
@pytest.mark.parametrize("command", ["report", "plot"])
def test_another_table_than_the_fitted_one_is_refused(capsys, fitted, tmp_path, command) -> None:
    data, out = fitted
    other = tmp_path / "other.csv"
    frame = pd.read_csv(data)
    frame.loc[0, "loss"] *= 1.5
    frame.to_csv(other, index=False)
    line = one_error_line(capsys, [command, out, "--data", other, "-o", tmp_path / "out"])
    assert f"--data: {other} is not the table {out} was fitted to" in line and "--allow-other-data" in line
    assert not (tmp_path / "out").exists()


def test_allow_other_data_warns(fitted, tmp_path) -> None:
    data, out = fitted
    fit = load_fit(out)
    assert check_data_is_fitted(fit, data) is None
    other = tmp_path / "other.csv"
    other.write_text(data.read_text() + "\n")
    warning = check_data_is_fitted(fit, other, allow_other=True)
    assert warning is not None and f"--data {other} is not the table {out} was fitted to" in warning


# ----------------------------------------------------------------------------- what fit records and counts
def test_fit_records_the_data_path_as_given(fitted, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["fit", "runs.csv", "-o", "again.json", "--grid", "coarse"]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["data"]["path"] == "runs.csv"


def test_fit_counts_trunks_not_branches(capsys, tmp_path) -> None:
    runs = simulate(KMEANS_TRUTH, np.geomspace(1e6, 1e9, 6), np.geomspace(1e8, 1e10, 3), bits=(), noise=0.01)
    runs["trunk"] = [f"t{n:g}" for n in runs["N"]]  # three cooldown branches (D) of each of 6 trunks
    runs.to_csv(tmp_path / "runs.csv", index=False)
    assert cli.main(["fit", str(tmp_path / "runs.csv"), "-o", str(tmp_path / "fit.json"), "--grid",
                     "coarse"]) == 0  # fmt: skip
    assert "fit 'all': 18 points, 6 trunks;" in capsys.readouterr().out
    entry = json.loads((tmp_path / "fit.json").read_text())["fits"]["all"]
    assert (entry["n_runs"], entry["n_trunks"]) == (18, 6)


# ----------------------------------------------------------------------------- rows a fit cannot trust
@pytest.mark.parametrize("tiny", [1e-300, 5e-324, 1e-7])
def test_a_tiny_loss_is_refused(capsys, tmp_path, tiny) -> None:
    runs = small_runs()
    runs.loc[4, "loss"] = tiny
    runs.to_csv(tmp_path / "runs.csv", index=False)
    line = one_error_line(capsys, ["fit", tmp_path / "runs.csv", "-o", tmp_path / "fit.json"])
    assert "column 'loss': 1 of 36 rows are below 1e-06, the smallest loss allowed (first: data row 5)" in (
        line
    )
    assert cli.main(["fit", str(tmp_path / "runs.csv"), "-o", str(tmp_path / "fit.json"), "--grid", "coarse",
                     "--drop-invalid"]) == 0  # fmt: skip
    dropped = json.loads((tmp_path / "fit.json").read_text())["data"]["dropped"]
    assert dropped == {"loss: below 1e-06, the smallest loss allowed": 1}


def test_a_p_that_contradicts_its_bits_is_refused(capsys, tmp_path) -> None:
    runs = small_runs()
    runs["quant.block_size"] = 64
    row = int(np.flatnonzero(runs["bits"].to_numpy() == 2)[1])
    runs.loc[row, "P"] = 3.25
    runs.to_csv(runs_csv := tmp_path / "runs.csv", index=False)
    line = one_error_line(capsys, ["fit", runs_csv, "-o", tmp_path / "fit.json", "--law", "precision"])
    assert line.endswith(
        f"column 'P': 1 of 36 rows contradict their bits column (first: data row {row + 1}, P 3.25 with "
        "bits 2); allowed: P_w = 2.25 for kmeans 2-bit, block 64; fix the table or drop its bits column"
    )
    runs = runs.drop(columns=["quant.block_size"])
    runs.loc[row, "P"] = 1.25  # no block size: P must still hold the code bits
    runs.to_csv(tmp_path / "runs.csv", index=False)
    line = one_error_line(capsys, ["fit", runs_csv, "-o", tmp_path / "fit.json", "--law", "precision"])
    assert "P 1.25 with bits 2); allowed: P >= bits" in line


def test_a_format_is_one_name_in_any_case(capsys, tmp_path) -> None:
    runs = small_runs()
    runs["format"] = runs["format"].replace({"kmeans": "KMeans"})
    runs.to_csv(tmp_path / "runs.csv", index=False)
    out = tmp_path / "fit.json"
    assert cli.main(["fit", str(runs_path := tmp_path / "runs.csv"), "-o", str(out), "--law", "precision",
                     "--by", "format", "--grid", "coarse"]) == 0  # fmt: skip
    assert list(json.loads(out.read_text())["fits"]) == ["kmeans"] and runs_path.is_file()
    capsys.readouterr()
    assert cli.main(["recommend", str(out), "--memory", "1GB", "--tokens", "1e11", "--format", "KMeans"]) == 0
    assert "kmeans" in capsys.readouterr().out.split("best: ")[1]
    doc = json.loads(out.read_text())
    doc["fits"] = {"KMeans": doc["fits"]["kmeans"]}  # a fit.json from before the names were lower-cased
    out.write_text(json.dumps(doc))
    assert load_fit(out).formats == ["kmeans"]
    assert cli.main(["predict", str(out), "--N", "1e8", "--D", "1e10", "--P", "2.25", "--format",
                     "KMEANS"]) == 0  # fmt: skip
