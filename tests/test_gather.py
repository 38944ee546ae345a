"""`bitlaw gather` on run dirs the test writes itself, to the run-dir contract (sweep/contract.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bitlaw import cli
from fit.data.simulate import KMEANS_TRUTH
from fit.law import predict_loss
from sweep.contract import compute_run_id

SIZES = {"tiny": (48, 2), "small": (96, 4), "base": (192, 6)}  # d_model, n_layers


def write_run(
    root: Path,
    name: str,
    fmt: str,
    bits: int,
    size: str,
    tokens: float,
    status: str = "completed",
    metrics: str | None = None,
    config_text: str | None = None,
) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    d_model, n_layers = SIZES[size]
    n_quant = 12 * d_model * d_model * n_layers
    p_w = 16.0 if fmt == "none" else bits + 0.25
    meta = {
        "run_id": None,  # the config's run id, as the job computes it (below)
        "format": fmt,
        "bits": bits,
        "P_w": p_w,
        "N_total": n_quant + 2 * 256 * d_model,
        "N_nonembed": n_quant + 2 * d_model * n_layers,
        "N_quant": n_quant,
        "N_hp": 2 * 256 * d_model,
        "D": tokens,
        "seed": 0,
        "git_sha": "abc",
        "corpus_sha256": "f" * 64,
        "torch_version": "2.13.0",
        "host": "node1",
        "slurm_job_id": None,
        "export": {"bytes": 123},
    }
    config = config_text or (
        f"model:\n  d_model: {d_model}\n  n_layers: {n_layers}\nquant:\n  format: {fmt}\n"
        f"  bits: {bits}\ntrain:\n  lr: 0.003\n  tokens: {tokens}\n  betas: [0.9, 0.95]\n"
    )
    (run_dir / "config.yaml").write_text(config)
    try:
        meta["run_id"] = compute_run_id(yaml.safe_load(config))
    except yaml.YAMLError:  # a config that cannot be read cannot be checked either
        meta["run_id"] = f"id-{name}"
    (run_dir / "run.json").write_text(json.dumps(meta))
    loss = float(predict_loss(KMEANS_TRUTH, n_quant, tokens, p_w))
    lines = [
        json.dumps(
            {
                "step": s,
                "tokens": s * 1000,
                "train_loss": loss + 0.1,
                "val_loss": loss + 0.01 / s,
                "lr": 1e-3,
                "phase": "qat",
                "tokens_per_s": 1e5,
            }
        )
        for s in (1, 2, 3)
    ]
    (run_dir / "metrics.jsonl").write_text(metrics if metrics is not None else "\n".join(lines) + "\n")
    (run_dir / "checkpoint").mkdir()
    (run_dir / "checkpoint" / "run.json").write_text("{}")  # must not count as a run dir
    if status != "pending":
        summary = {
            "status": status,
            "final_val_loss": loss if status == "completed" else None,
            "tokens_seen": tokens,
            "wall_s": 1.5,
            "reason": None if status == "completed" else "loss is nan",
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    i = 0
    for fmt, bits in [("kmeans", 1), ("kmeans", 2), ("kmeans", 4), ("none", 16)]:
        for size in SIZES:
            for tokens in (2e5, 6e5, 2e6):
                write_run(root / "multirun" / str(i // 10), f"{i}", fmt, bits, size, tokens)
                i += 1
    write_run(root, "diverged", "kmeans", 1, "tiny", 1e6, status="diverged")
    write_run(root, "pending", "kmeans", 1, "tiny", 1e6, status="pending")
    return root


def test_gather_writes_one_row_per_completed_run_with_contract_columns(capsys, tmp_path, sweep) -> None:
    out = tmp_path / "runs.csv"
    assert cli.main(["gather", str(sweep), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    table = pd.read_csv(out)
    assert len(table) == 36 and set(table["status"]) == {"completed"}
    assert list(table.columns[:14]) == [
        "run",
        "format",
        "bits",
        "P",
        "N",
        "D",
        "loss",
        "N_total",
        "N_nonembed",
        "N_quant",
        "N_hp",
        "status",
        "sweep",
        "run_dir",
    ]
    assert {"model.d_model", "train.lr", "quant.bits"} <= set(table.columns)
    assert (table["N"] == table["N_quant"]).all()
    assert json.loads(table["train.betas"].iloc[0]) == [0.9, 0.95]
    # the runs that did not complete are listed with their reason, not silently lost
    assert "diverged (loss is nan)" in captured.err and "pending" in captured.err
    assert "wrote" in captured.out and "36 completed, 2 not completed" in captured.out


def test_gathered_table_fits_by_format_with_no_column_flags(capsys, tmp_path, sweep) -> None:
    runs, fit_json = tmp_path / "runs.parquet", tmp_path / "fit.json"
    assert cli.main(["gather", str(sweep), "-o", str(runs)]) == 0
    assert (
        cli.main(
            [
                "fit",
                str(runs),
                "-o",
                str(fit_json),
                "--law",
                "precision",
                "--by",
                "format",
                "--grid",
                "coarse",
            ]
        )
        == 0
    )
    doc = json.loads(fit_json.read_text())
    assert list(doc["fits"]) == ["kmeans"]  # the 16-bit anchor joins kmeans; no separate 'none' fit
    entry = doc["fits"]["kmeans"]
    assert entry["n_points"] == 36 and entry["n_runs"] == 36
    assert entry["gamma"] == pytest.approx(KMEANS_TRUTH["gamma"], rel=1e-3)
    # every gathered run is its own trunk (no branches here), so resampling trunks+seeds = resampling runs
    assert doc["data"]["bootstrap_unit"] == "trunk+seed" and doc["n_convention"] == "quant"
    assert entry["P_range"] == [1.25, 16.0]


def test_n_convention_and_all(capsys, tmp_path, sweep) -> None:
    out = tmp_path / "runs.csv"
    assert cli.main(["gather", str(sweep), "-o", str(out), "--n-convention", "total", "--all"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 38
    assert (table["N"] == table["N_total"]).all()
    diverged = table[table["status"] == "diverged"].iloc[0]
    assert diverged["reason"] == "loss is nan" and np.isnan(diverged["loss"])


def test_corrupt_metrics_warns_and_never_crashes(capsys, tmp_path) -> None:
    root = tmp_path / "sweep"
    torn = '{"step": 1, "val_loss": 3.0}\nnot json at all\n{"step": 2, "val_lo'
    write_run(root, "a", "kmeans", 2, "tiny", 1e6, metrics=torn)
    write_run(root, "b", "kmeans", 2, "small", 1e6, metrics="\x00\x01binary junk")
    write_run(root, "c", "kmeans", 2, "base", 1e6)
    out = tmp_path / "runs.csv"
    assert cli.main(["gather", str(root), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 unreadable line(s)" in err and "skipped 1 unreadable line(s)" in err
    table = pd.read_csv(out).set_index("run_dir")
    row = table.loc[str(root / "a")]
    assert row["n_metrics"] == 1 and row["last_val_loss"] == 3.0


def test_yaml_is_never_executed(capsys, tmp_path) -> None:
    root = tmp_path / "sweep"
    marker = tmp_path / "pwned"
    evil = f"!!python/object/apply:os.system ['touch {marker}']\n"
    write_run(root, "evil", "kmeans", 2, "tiny", 1e6, config_text=evil)
    out = tmp_path / "runs.csv"
    assert cli.main(["gather", str(root), "-o", str(out)]) == 0
    assert not marker.exists()
    assert "config.yaml: unreadable" in capsys.readouterr().err
    assert len(pd.read_csv(out)) == 1  # the run itself is kept; only its config columns are empty


def test_gather_errors_are_one_line(capsys, tmp_path) -> None:
    assert cli.main(["gather", str(tmp_path / "absent"), "-o", str(tmp_path / "r.csv")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli.main(["gather", str(tmp_path), "-o", str(tmp_path / "r.xlsx")]) == 2
    assert "must end in .csv or .parquet" in capsys.readouterr().err
    write_run(tmp_path / "s", "x", "kmeans", 2, "tiny", 1e6, status="failed")
    assert cli.main(["gather", str(tmp_path / "s"), "-o", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bitlaw gather: error: no completed runs") and "failed" in err[0]
    assert not (tmp_path / "r.csv").exists()


def test_a_run_dir_holding_another_runs_run_json_is_refused(capsys, tmp_path) -> None:
    root = tmp_path / "sweep"
    good = write_run(root, "good", "kmeans", 2, "tiny", 1e6)
    other = write_run(root, "other", "kmeans", 4, "small", 2e6)
    # a run.json copied over from another run: format, bits, N and run_id are all that run's
    (other / "run.json").write_text((good / "run.json").read_text())
    out = tmp_path / "runs.csv"
    for flags in ([], ["--all"]):
        assert cli.main(["gather", str(root), "-o", str(out), *flags]) == 0
        refused = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("refused:")]
        assert len(refused) == 1 and str(other) in refused[0] and "belongs to another run" in refused[0]
        table = pd.read_csv(out)
        assert list(table["run_dir"]) == [str(good)]  # never a row under the other run's id


def test_config_json_is_read_before_config_yaml(capsys, tmp_path) -> None:
    """Jobs write config.json beside config.yaml (gather parses JSON ~20x faster); a torn one falls back to
    the YAML with a warning, and a dir with only config.yaml (older runs) is read as before."""
    root = tmp_path / "sweep"
    twin = write_run(root, "twin", "kmeans", 2, "tiny", 1e6)
    config = yaml.safe_load((twin / "config.yaml").read_text())
    config["train"]["note"] = "from json"  # only the JSON has it: the row shows which file was read
    (twin / "config.json").write_text(json.dumps(config))
    meta = json.loads((twin / "run.json").read_text())
    (twin / "run.json").write_text(json.dumps({**meta, "run_id": compute_run_id(config)}))
    torn = write_run(root, "torn", "kmeans", 4, "tiny", 1e6)
    (torn / "config.json").write_text('{"model": {"d_mod')
    write_run(root, "yaml_only", "none", 16, "tiny", 1e6)
    out = tmp_path / "runs.csv"
    assert cli.main(["gather", str(root), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "config.json: unreadable, torn or not a JSON object; read config.yaml instead" in err
    table = pd.read_csv(out).set_index("run_dir")
    assert table.loc[str(twin), "train.note"] == "from json"
    assert pd.isna(table.loc[str(torn), "train.note"]) and table.loc[str(torn), "model.d_model"] > 0
    assert len(table) == 3 and not err.count("refused")
