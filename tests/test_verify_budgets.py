"""Two budgets, chosen before any contender trains (fit/study/envelope.py, `bitlaw verify plan --envelope`),
and their verdicts in one verify.json (`bitlaw verify check PLAN PLAN …`): forecast intervals per contender,
the share inside them, and the undecided verdict checked against the measured margin."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitlaw.cli import main
from fit.answer.memory import BitAccounting
from fit.answer.shapes import resolve_arch
from fit.law import predict_loss
from fit.render.verify_text import render_budgets
from fit.study.envelope import GridSpan, contenders_at, envelope_budget
from sweep.contract import ladder_shape, param_counts

TRUTH = {"A": 60.0, "B": 100.0, "E": 1.2, "alpha": 0.3, "beta": 0.4, "gamma": 3.0}
WIDTHS = (32, 64, 96, 128)
D_GRID = (384000, 576000, 768000)
POINTS = [("kmeans", b) for b in (1, 2, 4)] + [("none", 16)]
ACCT = BitAccounting(block_size=32)
D_TEST = 640000.0


def ladder_grid() -> pd.DataFrame:
    rows = []
    for d_model in WIDTHS:
        shape = ladder_shape(d_model)
        counts = param_counts(*shape.values())
        for fmt, bits in POINTS:
            p = ACCT.p_w(bits, fmt)
            for d in D_GRID:
                n = counts["N_quant"]
                rows.append({"run": f"w{d_model}-{fmt}{bits}-{d}", "format": fmt, "bits": bits, "P": p,
                             "N": n, "D": d, "N_quant": n, "N_hp": counts["N_hp"],
                             "loss": float(predict_loss(TRUTH, n, d, p)), "status": "completed",
                             "final_val_loss_se": 0.03, "quant.block_size": 32,
                             **{f"model.{k}": v for k, v in shape.items()}})
    return pd.DataFrame(rows)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    grid = tmp_path / "runs.csv"
    table = ladder_grid()
    table.to_csv(grid, index=False)
    rng = np.random.default_rng(0)
    samples = {k: list(v * np.exp(0.02 * rng.standard_normal(200))) for k, v in TRUTH.items()}
    dn = table["D"] / table["N_quant"]
    entry = {**TRUTH, "bootstrap_samples": samples,
             "data_range": {"N": [float(table["N_quant"].min()), float(table["N_quant"].max())],
                            "D_over_N": [float(dn.min()), float(dn.max())]}}
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"law": "precision", "loss": "huber", "delta": 1e-3,
                               "columns": {"N": "N_quant"}, "fits": {"kmeans": entry}}))
    return fit, grid


def test_inside_is_the_largest_budget_whose_contenders_all_lie_in_the_envelope() -> None:
    grid, shapes, bits = ladder_grid(), resolve_arch("ladder"), (1, 2, 3, 4, 16)
    span = GridSpan.of(grid)
    budget = envelope_budget("inside", shapes, grid, D_TEST, bits, "kmeans", ACCT)
    picked = contenders_at(budget, shapes, bits, "kmeans", ACCT)
    assert all(span.inside(s.n_quant, D_TEST) for s in picked.values())
    assert max(s.n_quant for s in picked.values()) <= 1.5 * span.n_max
    # the budget is one contender's own memory (the tightest that holds them), and a little more money
    # brings in a contender outside the envelope: nothing larger qualifies
    candidates = sorted({s.n_quant * ACCT.p_w(b, "none" if b == 16 else "kmeans") / 8 + 2 * s.n_hp
                         for s in shapes for b in bits})
    larger = next(c for c in candidates if c > budget)
    assert not all(span.inside(s.n_quant, D_TEST) for s in contenders_at(larger, shapes, bits, "kmeans", ACCT)
                   .values())


def test_beyond_is_the_smallest_budget_with_a_contender_twice_the_grids_largest_n() -> None:
    grid, shapes, bits = ladder_grid(), resolve_arch("ladder"), (1, 2, 3, 4, 16)
    n_max = GridSpan.of(grid).n_max
    budget = envelope_budget("beyond", shapes, grid, D_TEST, bits, "kmeans", ACCT)
    assert max(s.n_quant for s in contenders_at(budget, shapes, bits, "kmeans", ACCT).values()) >= 2 * n_max
    below = contenders_at(budget * (1 - 1e-9), shapes, bits, "kmeans", ACCT)
    assert max(s.n_quant for s in below.values()) < 2 * n_max
    inside = envelope_budget("inside", shapes, grid, D_TEST, bits, "kmeans", ACCT)
    assert inside < budget


def test_an_envelope_the_family_cannot_meet_is_one_line(setup, tmp_path: Path, capsys) -> None:
    fit, grid = setup
    code = main(["verify", "plan", str(fit), "--runs", str(grid), "-o", str(tmp_path / "v"), "--envelope",
                 "inside", "--tokens", "1e9", "--arch", "llama3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--envelope inside" in err
    assert not (tmp_path / "v").exists()


def _measured(plan: dict, shift: dict[int, float]) -> pd.DataFrame:
    return pd.DataFrame([{"run": f"{plan['envelope']}{c['bits']}", "format": c["format"], "bits": c["bits"],
                          "D": plan["D"], "loss": c["predicted_loss"] + shift.get(c["bits"], 0.0),
                          "status": "completed", "final_val_loss_se": 0.01,
                          **{f"model.{k}": v for k, v in c["shape"].items()}} for c in plan["contenders"]])


def test_both_budgets_are_planned_then_checked_in_one_verify_json(setup, tmp_path: Path, capsys) -> None:
    fit, grid = setup
    plans = {}
    for envelope in ("inside", "beyond"):
        out = tmp_path / envelope
        assert main(["verify", "plan", str(fit), "--runs", str(grid), "-o", str(out), "--envelope", envelope,
                     "--tokens", f"{D_TEST:.0f}"]) == 0
        plans[envelope] = json.loads((out / "contenders.json").read_text())
        assert plans[envelope]["envelope"] == envelope and plans[envelope]["block_size"] == 32  # the grid's
        overrides = (out / "sweep_overrides.txt").read_text().split()
        assert "~grid" in overrides  # the demo's axes dropped
        # the group's options carry the envelope (two budgets can share one sweep), largest model first
        names = next(o for o in overrides if o.startswith("+contender=")).split("=", 1)[1].split(",")
        assert sorted(names) == sorted(p.stem for p in (out / "conf" / "contender").glob("*.yaml"))
        assert all(n.startswith(f"{envelope}_") for n in names)
        sizes = {f"{envelope}_" + ("bf16" if c["format"] == "none" else f"kmeans{c['bits']}"): c["N_quant"]
                 for c in json.loads((out / "contenders.json").read_text())["contenders"]}
        assert [sizes[n] for n in names] == sorted(sizes.values(), reverse=True)
        for c in plans[envelope]["contenders"]:
            assert not c["in_grid"]  # 640k is no grid D: every contender is new data
            lo, hi = c["forecast"]["interval"]
            assert lo <= c["predicted_ci"][0] <= c["predicted_loss"] <= c["predicted_ci"][1] <= hi
    n_max = ladder_grid()["N_quant"].max()
    assert max(c["N_quant"] for c in plans["inside"]["contenders"]) <= 1.5 * n_max
    assert max(c["N_quant"] for c in plans["beyond"]["contenders"]) >= 2 * n_max
    # the forecast intervals are wider beyond the grid than inside it (relative to the point)
    width = {e: max((c["forecast"]["interval"][1] - c["forecast"]["interval"][0]) / c["predicted_loss"]
                    for c in plans[e]["contenders"]) for e in plans}
    assert width["beyond"] > width["inside"]
    # measured: inside on the law; beyond, the largest contender misses far above its forecast interval
    big = max(plans["beyond"]["contenders"], key=lambda c: c["N_quant"])
    runs = []
    for envelope, shift in (("inside", {}), ("beyond", {big["bits"]: 2.0})):
        path = tmp_path / f"{envelope}.csv"
        _measured(plans[envelope], shift).to_csv(path, index=False)
        runs += ["--runs", str(path)]
    capsys.readouterr()
    assert main(["verify", "check", str(tmp_path / "inside" / "contenders.json"),
                 str(tmp_path / "beyond" / "contenders.json"), *runs, "-o", str(tmp_path / "v.json")]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "v.json").read_text())
    inside, beyond = doc["budgets"]
    assert (inside["envelope"], beyond["envelope"]) == ("inside", "beyond")
    assert inside["inside_forecast"] == {"n": len(inside["contenders"]), "inside": len(inside["contenders"])}
    assert beyond["inside_forecast"]["inside"] == len(beyond["contenders"]) - 1
    missed = [r for r in beyond["contenders"] if r["inside_forecast"] is False]
    assert [r["bits"] for r in missed] == [big["bits"]]
    assert doc["summary"]["contenders"] == len(inside["contenders"]) + len(beyond["contenders"])
    assert doc["summary"]["with_forecast_interval"] == doc["summary"]["contenders"]
    assert doc["summary"]["inside_forecast"] == doc["summary"]["contenders"] - 1
    assert "### Inside" in printed and "### Beyond" in printed
    assert "Outside their forecast interval" in printed
    assert printed.startswith(render_budgets(doc))


def test_a_budget_without_a_winner_is_checked_against_its_stated_error(setup, tmp_path: Path) -> None:
    from fit.study.verify import ContenderPlan, verdict

    fit, grid = setup
    out = tmp_path / "inside"
    assert main(["verify", "plan", str(fit), "--runs", str(grid), "-o", str(out), "--envelope", "inside",
                 "--tokens", f"{D_TEST:.0f}"]) == 0
    raw = json.loads((out / "contenders.json").read_text())
    # as if the fit had named no winner: a margin it could not carry (recorded before training)
    ranked = sorted(raw["contenders"], key=lambda c: c["predicted_loss"])
    stated = ranked[1]["predicted_loss"] - ranked[0]["predicted_loss"] + 0.01
    raw |= {"predicted_winner": None, "undecided_reason": "margin < forecast error",
            "margin": {"margin_nats": ranked[1]["predicted_loss"] - ranked[0]["predicted_loss"],
                       "forecast_error_nats": stated, "runner_up_bits": ranked[1]["bits"]}}
    plan = ContenderPlan.from_dict(raw)
    for shift, within in ((0.0, True), (0.5, False)):
        table = _measured(raw, {ranked[1]["bits"]: shift})
        check = verdict(plan, [table])["undecided_check"]
        assert check["within"] is within and check["stated_error_nats"] == stated
        assert check["leader_bits"] == ranked[0]["bits"]
