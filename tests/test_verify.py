"""The forecast check (fit/study/verify.py, `bitlaw verify`): which contenders it picks, the Hydra configs
that
train them with the grid's recipe, and the verdict when the measured losses agree or disagree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bitlaw.cli import main
from fit.answer.memory import BF16_BITS, BitAccounting, shape_bytes, weight_bytes
from fit.answer.shapes import file_shapes
from fit.fitfile import load_fit
from fit.law import predict_loss
from fit.study.verify import ContenderPlan, choose_contenders, smallest_bf16_budget, verdict

REPO = Path(__file__).resolve().parents[1]
FAMILY = REPO / "tests" / "data" / "demo_family_2026_12_02.yaml"
GRID_MODELS = ("r49k", "base", "r295k")
TRUTH = {"A": 60.0, "B": 100.0, "E": 1.2, "alpha": 0.3, "beta": 0.4, "gamma": 3.0}
D_GRID = (500736, 750592, 1000448)


def grid_table() -> pd.DataFrame:
    """The demo grid's rows (shape columns as `bitlaw gather` writes them), losses from TRUTH."""
    shapes = {s.name: s for s in file_shapes(FAMILY)}
    shapes["base"] = shapes["d64x2"]
    acct = BitAccounting()
    rows = []
    for name in GRID_MODELS:
        s = shapes[name]
        for fmt, bits in [("kmeans", b) for b in (1, 2, 3, 4)] + [("none", 16)]:
            p = acct.p_w(bits, fmt)
            for d in D_GRID:
                rows.append(
                    {
                        "run": f"{name}-{fmt}{bits}-{d}",
                        "format": fmt,
                        "bits": bits,
                        "P": p,
                        "N": s.n_quant,
                        "D": d,
                        "loss": float(predict_loss(TRUTH, s.n_quant, d, p)),
                        "N_quant": s.n_quant,
                        "N_hp": s.n_hp,
                        "status": "completed",
                        "final_val_loss_se": 0.03,
                        **{
                            f"model.{k}": getattr(s, k)
                            for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")
                        },
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    grid = tmp_path / "runs.csv"
    grid_table().to_csv(grid, index=False)
    rng = np.random.default_rng(0)
    samples = {k: list(v * np.exp(0.02 * rng.standard_normal(200))) for k, v in TRUTH.items()}
    fit = tmp_path / "fit.json"
    fit.write_text(
        json.dumps(
            {
                "law": "precision",
                "loss": "huber",
                "delta": 1e-3,
                "columns": {"N": "N_quant"},
                "fits": {"kmeans": {**TRUTH, "bootstrap_samples": samples}},
            }
        )
    )
    return fit, grid


def test_contenders_are_each_widths_largest_fitting_model(setup: tuple[Path, Path]) -> None:
    fit, grid = setup
    table = pd.read_csv(grid)
    family = file_shapes(FAMILY)
    plan = choose_contenders(load_fit(fit), table, "kmeans", family)
    budget = smallest_bf16_budget(table)
    r49k = next(s for s in family if s.name == "r49k")
    assert budget == weight_bytes(r49k.n_quant, r49k.n_hp, BF16_BITS)
    assert plan.budget_bytes == budget and plan.D == max(D_GRID)
    assert [c.bits for c in plan.contenders] == [1, 2, 3, 4, 16]
    acct = BitAccounting()
    for c in plan.contenders:
        p = acct.p_w(c.bits, c.format)
        assert c.memory_bytes <= budget
        bigger = [s for s in family if s.n_quant > c.N_quant]
        assert all(shape_bytes(s, p) > budget for s in bigger), c  # nothing larger fits
        assert c.predicted_ci[0] <= c.predicted_loss <= c.predicted_ci[1]
    by_bits = {c.bits: c for c in plan.contenders}
    assert by_bits[16].model == "r49k" and by_bits[16].in_grid
    assert not any(by_bits[b].in_grid for b in (1, 2, 3, 4))
    assert by_bits[1].N_quant >= 2 * table["N_quant"].max()  # out of sample in N
    assert not plan.warnings
    losses = {c.bits: c.predicted_loss for c in plan.contenders}
    assert plan.predicted_winner == min(losses, key=losses.get)


def measured_table(plan: ContenderPlan, losses: dict[int, float]) -> pd.DataFrame:
    rows = []
    for c in plan.contenders:
        rows.append(
            {
                "run": f"c{c.bits}",
                "format": c.format,
                "bits": c.bits,
                "D": plan.D + 0.0,
                "loss": losses[c.bits],
                "status": "completed",
                "final_val_loss_se": 0.03,
                **{f"model.{k}": v for k, v in c.shape.items()},
            }
        )
    return pd.DataFrame(rows)


def test_check_holds_when_the_runs_match_the_law(setup: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    fit, grid = setup
    out = tmp_path / "verify"
    assert main(["verify", "plan", str(fit), "--runs", str(grid), "-o", str(out), "--arch", str(FAMILY)]) == 0
    plan = ContenderPlan.from_dict(json.loads((out / "contenders.json").read_text()))
    new = sorted(p.stem for p in (out / "conf" / "contender").glob("*.yaml"))
    assert new == ["kmeans1", "kmeans2", "kmeans3", "kmeans4"]  # bf16's contender is a grid run: reused
    overrides = (out / "sweep_overrides.txt").read_text().split()
    assert "+contender=kmeans1,kmeans2,kmeans3,kmeans4" in overrides and "train.branches=[]" in overrides
    # the contenders' runs land exactly on the law: only the new ones come from the contender sweep
    exact = {c.bits: c.predicted_loss for c in plan.contenders}
    contender_runs = tmp_path / "contender_runs.csv"
    measured_table(plan, exact).query("bits != 16").to_csv(contender_runs, index=False)
    report = tmp_path / "report.md"
    report.write_text("# Report\n\nbody\n")
    argv = [
        "verify",
        "check",
        str(out / "contenders.json"),
        "--runs",
        str(contender_runs),
        "--runs",
        str(grid),
        "-o",
        str(tmp_path / "verify.json"),
        "--report",
        str(report),
    ]
    assert main(argv) == 0
    assert main(argv) == 0  # re-running replaces the section
    written = json.loads((tmp_path / "verify.json").read_text())
    assert set(written) == {"budgets", "summary"} and len(written["budgets"]) == 1
    result = written["budgets"][0]
    assert written["summary"]["contenders"] == len(result["contenders"])
    assert set(result) >= {"envelope", "format", "budget_bytes", "D", "predicted_winner", "measured_winner",
                           "contenders"}
    assert result["winner_held"] and result["predicted_winner"] == result["measured_winner"]
    assert result["max_abs_error"] < 1e-9
    for row in result["contenders"]:
        assert set(row) >= {
            "bits",
            "model",
            "N_quant",
            "memory_bytes",
            "predicted_loss",
            "predicted_ci",
            "measured_loss",
        }
        assert row["inside_ci"]
    bf16 = next(r for r in result["contenders"] if r["bits"] == 16)
    assert bf16["run"] == f"r49k-none16-{max(D_GRID)}"  # read from the grid's own run
    text = report.read_text()
    assert text.count("## The forecast, tested") == 1 and "**The forecast held**" in text
    assert text.startswith("# Report\n\nbody\n")
    assert main([*argv, "--title", "The forecast, tested again"]) == 0  # a second title: a second section
    text = report.read_text()
    assert text.count("## The forecast, tested\n") == 1 and text.count("## The forecast, tested again\n") == 1


def test_check_says_when_the_forecast_fails(setup: tuple[Path, Path], tmp_path: Path) -> None:
    fit, grid = setup
    plan = choose_contenders(load_fit(fit), pd.read_csv(grid), "kmeans", file_shapes(FAMILY))
    losses = {c.bits: c.predicted_loss for c in plan.contenders}
    losses[16] = min(losses.values()) - 0.05  # bf16 measured best: the predicted winner is not
    result = verdict(plan, [measured_table(plan, losses)])
    assert not result["winner_held"]
    assert result["measured_winner"]["bits"] == 16
    assert result["max_abs_error"] == pytest.approx(
        abs(next(c.predicted_loss for c in plan.contenders if c.bits == 16) - losses[16])
    )
    from fit.render.verify_text import render_markdown

    assert "**The forecast did not hold**" in render_markdown(result)


def test_check_refuses_a_missing_contender_in_one_line(
    setup: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    fit, grid = setup
    out = tmp_path / "verify"
    assert main(["verify", "plan", str(fit), "--runs", str(grid), "-o", str(out), "--arch", str(FAMILY)]) == 0
    capsys.readouterr()
    code = main(
        ["verify", "check", str(out / "contenders.json"), "--runs", str(grid), "-o", str(tmp_path / "v.json")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "1-bit, 2-bit, 3-bit, 4-bit contender(s)" in err
    assert not (tmp_path / "v.json").exists()


def test_a_budget_below_the_family_is_one_line(setup: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    fit, grid = setup
    code = main(
        ["verify", "plan", str(fit), "--runs", str(grid), "-o", str(tmp_path / "v"), "--memory", "1kB"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--memory" in err
    assert not (tmp_path / "v").exists()


def test_a_contender_config_trains_with_the_grids_recipe(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """The generated group composes with experiment=demo: the contender's shape and point, the demo's recipe
    (lr from the width rule, WSD, batch), one D and no branches."""
    fit, grid = setup
    out = tmp_path / "verify"
    assert main(["verify", "plan", str(fit), "--runs", str(grid), "-o", str(out)]) == 0
    overrides = (out / "sweep_overrides.txt").read_text().split()
    job = [o if not o.startswith("+contender=") else "+contender=kmeans1" for o in overrides]
    res = subprocess.run(
        [sys.executable, "-m", "sweep", *job, "--cfg", "job", "--resolve"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load(res.stdout)
    plan = json.loads((out / "contenders.json").read_text())
    one_bit = next(c for c in plan["contenders"] if c["bits"] == 1)
    assert cfg["model"] == one_bit["shape"]
    assert (cfg["quant"]["format"], cfg["quant"]["bits"]) == ("kmeans", 1)
    demo = yaml.safe_load((REPO / "conf" / "experiment" / "demo.yaml").read_text())
    assert cfg["train"]["lr"] == pytest.approx(0.128 / one_bit["shape"]["d_model"])
    for key in ("schedule", "batch_tokens", "warmup", "eval_tokens", "seq_len"):
        assert cfg["train"][key] == demo["train"][key]
    assert cfg["quant"]["qat_start"] == demo["quant"]["qat_start"]
    assert cfg["train"]["branches"] == [] and cfg["train"]["tokens"] == max(D_GRID)


def test_other_forms_forecast_the_same_contenders(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """--compare: an efficiency-law fit whose effs are the precision law's capacities (bf16's as 1) predicts
    the same losses up to bf16's own capacity, hence the same winner; its errors are scored alike."""
    from fit.law import capacity

    fit, grid = setup
    out = tmp_path / "verify"
    assert main(["verify", "plan", str(fit), "--runs", str(grid), "-o", str(out)]) == 0
    plan = ContenderPlan.from_dict(json.loads((out / "contenders.json").read_text()))
    full = float(capacity(16.0, TRUTH["gamma"]))
    effs = {f"{c.P:g}": float(capacity(c.P, TRUTH["gamma"])) / full for c in plan.contenders if c.bits != 16}
    a = TRUTH["A"] * full ** -TRUTH["alpha"]  # the efficiency form's N has bf16 at eff 1
    other = tmp_path / "efficiency.json"
    other.write_text(
        json.dumps(
            {
                "law": "efficiency",
                "fits": {
                    "kmeans": {**{k: TRUTH[k] for k in ("B", "E", "alpha", "beta")}, "A": a, "eff": effs}
                },
            }
        )
    )
    runs = tmp_path / "contenders.csv"
    measured_table(plan, {c.bits: c.predicted_loss for c in plan.contenders}).to_csv(runs, index=False)
    argv = [
        "verify",
        "check",
        str(out / "contenders.json"),
        "--runs",
        str(runs),
        "-o",
        str(tmp_path / "v.json"),
        "--compare",
        str(other),
    ]
    assert main(argv) == 0
    (result,) = json.loads((tmp_path / "v.json").read_text())["budgets"]
    (form,) = result["other_forms"]
    assert form["law"] == "efficiency" and form["winner_held"]
    assert form["predicted_winner"] == result["measured_winner"]["bits"]
    assert form["mean_abs_error"] < 1e-9
