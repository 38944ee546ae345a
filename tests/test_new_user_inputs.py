"""Inputs a new user tried (issue 28's last 40): each ends in a true answer or one line naming what to change.

One test per class of case; the before of each is in its docstring.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, compose_config
from test_gather import write_run

from bitlaw import cli
from fit.answer.caveats import predict_warnings
from fit.data.table import parse_columns, read_frame
from fit.errors import InputError
from fit.fitfile import load_fit
from fit.render.report import section_fits
from fit.units import parse_memory
from sweep.config import ConfigError, from_dict

DEMO = ROOT / "results" / "demo"


def test_a_table_read_wrongly_by_pandas_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    """A ';'-delimited CSV was 'column N not found (have: run;format;...)'; a header naming 'loss' twice fit
    the first without a word; a bad JSONL line was 'Expected object or value at position 9191'."""
    frame = pd.read_csv(DEMO / "runs.csv").head(4)
    semi = tmp_path / "semi.csv"
    frame.to_csv(semi, sep=";", index=False)
    with pytest.raises(InputError, match=r"looks ';'-delimited; bitlaw reads ',' in \.csv"):
        read_frame(semi)
    dup = tmp_path / "dup.csv"
    frame.assign(other=frame["loss"] * 2).rename(columns={"other": "loss"}).to_csv(dup, index=False)
    with pytest.raises(InputError, match=r"names column\(s\) 'loss' more than once"):
        read_frame(dup)
    lines = [json.dumps(r) for r in frame.to_dict("records")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:2] + ['{"run": "x", "N": 1e5, '] + lines[2:]) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl: line 3 is not valid JSON"):
        read_frame(bad)
    good = tmp_path / "good.csv"
    frame.to_csv(good, index=False)
    assert len(read_frame(good)) == 4  # a well-formed table still reads


def test_a_column_mapped_twice_is_refused() -> None:
    """--columns loss=loss,loss=N kept the last: a fit of N as the loss, MAPE 67 %, exit 0."""
    with pytest.raises(InputError, match="'loss' is mapped twice"):
        parse_columns("loss=loss,loss=N")
    assert parse_columns("N=params,loss=val") == {"N": "params", "loss": "val"}


def test_predict_without_format_says_the_option_is_required(capsys) -> None:
    """It said 'fit.json has no fit for a format', as if a format were missing from the file."""
    code = cli.main(["predict", str(DEMO / "fit.json"), "--N", "1e5", "--D", "1e6", "--P", "2.25"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--format: required" in err[0] and "allowed: kmeans, uniform" in err[0]


def test_an_infinite_memory_budget_is_refused() -> None:
    """--memory 1e999GB overflowed to inf and recommend answered 'at inf TB the winner is ...'."""
    with pytest.raises(InputError, match="must be a positive, finite amount"):
        parse_memory("1e999GB")
    assert parse_memory("8GB") == [8e9]


def test_gather_takes_a_nan_final_loss_as_missing(capsys, tmp_path: Path) -> None:
    """summary.json's final_val_loss NaN gave a 'completed' row with an empty loss, counted as completed."""
    root = tmp_path / "sweep"
    run_dir = write_run(root, "a", "kmeans", 2, "tiny", 1e6)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "final_val_loss": float("nan")}))
    out = tmp_path / "runs.csv"
    assert cli.main(["gather", str(root), "-o", str(out)]) == 0
    assert "final_val_loss nan, not a finite number; used the last val_loss" in capsys.readouterr().err
    row = pd.read_csv(out).iloc[0]
    assert row["loss"] == row["last_val_loss"] and pd.notna(row["loss"])


@pytest.mark.parametrize("override, says", [
    ("train.tokens=1e400", "train.tokens must be a finite number, got inf"),  # was an OverflowError
    ("train.lr=inf", "train.lr must be a finite number, got inf"),  # was a run trained to divergence
    ("train.seed=-1", "train.seed must be an integer >= 0"),  # was numpy's ValueError in the job
])
def test_non_finite_train_values_and_a_negative_seed_are_refused(override: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(")):
        from_dict(compose_config(override))


def test_the_report_counts_trunks_as_fit_does(tmp_path: Path) -> None:
    """The report said '60 points from 60 runs' where fit said '60 points, 20 trunks'."""
    data = json.loads((DEMO / "fit.json").read_text())
    for entry in data["fits"].values():
        entry.update(n_points=60, n_runs=60, n_trunks=20)
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(data))
    text = "\n".join(section_fits(load_fit(path)))
    assert "60 points from 20 trunks" in text and "from 60 runs" not in text


def test_a_fit_json_without_an_identification_check_says_so(tmp_path: Path) -> None:
    """An older fit.json (no `identification`) was answered as if its γ were known to be identified."""
    old = tmp_path / "old.json"
    data = json.loads((DEMO / "fit.json").read_text())
    for entry in data["fits"].values():
        entry.pop("identification", None)  # as bitlaw wrote fit.json before the check existed
    old.write_text(json.dumps(data))
    warned = predict_warnings(load_fit(old), "kmeans", {"N": 1e5, "D": 1e6})
    assert any("records no identification check" in w for w in warned)
    for entry in data["fits"].values():
        entry["identification"] = {}
    new = tmp_path / "new.json"
    new.write_text(json.dumps(data))
    assert not any("identification check" in w for w in predict_warnings(load_fit(new), "kmeans", {}))


def test_verify_plan_writes_overrides_sweep_can_parse(tmp_path: Path, capsys) -> None:
    """An -o with '=' or ',' wrote hydra.searchpath=[file:///…/d=1/…], which sweep's parser refused; one with
    a space was split by $(cat sweep_overrides.txt)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = tmp_path / "d=1" / "vp,x"
    args = ["verify", "plan", str(DEMO / "fit.json"), "--runs", str(DEMO / "runs.csv"), "--bits", "1,2"]
    assert cli.main([*args, "-o", str(out)]) == 0
    line = next(o for o in (out / "sweep_overrides.txt").read_text().split() if o.startswith("hydra.search"))
    parsed = OverridesParser.create().parse_override(line).value()
    assert parsed == [f"file://{(out / 'conf').resolve()}"]
    capsys.readouterr()
    assert cli.main([*args, "-o", str(tmp_path / "with space")]) == 2
    assert "holds whitespace" in capsys.readouterr().err
