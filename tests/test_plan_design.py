"""`bitlaw plan`'s design check (fit/study/design.py): the demo's grid is warned about before compute (< 10x
in N; its verify contenders ~2x beyond and below its D/N), a wide grid with its contenders inside is not."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitlaw import cli
from fit.answer.forecast import DEFAULT
from fit.answer.presets import get_preset
from fit.answer.shapes import resolve_arch
from fit.study.design import MAX_FACTOR, design, expected_error, n_factor, render_design
from fit.study.plan import grid_table

ROOT = Path(__file__).resolve().parents[1]
DEMO_FAMILY = str(ROOT / "tests/data/demo_family_2026_12_02.yaml")
# the first demo's forecast budget (results/demo/verify/contenders.json until 2026-12-03): the grid's smallest
# bf16 model's memory (r49k) at its largest D, where the shapes of DEMO_FAMILY were tested
DEMO_VERIFY = {"budget_bytes": 164480.0, "D": 1000448.0}


def _demo_design(capsys: pytest.CaptureFixture[str]) -> dict:
    argv = ["plan", "experiment=demo", "--cost", "--preset", "1bw-kmeans", "--arch", DEMO_FAMILY,
            "--memory", f"{DEMO_VERIFY['budget_bytes']:.0f}", "--tokens", f"{DEMO_VERIFY['D']:.0f}", "--json"]
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)["design"]


def _envelope(doublings: float) -> float:
    """fit/answer/forecast.py's DEFAULT at ``doublings``, as a relative error (exp(r) − 1)."""
    return math.expm1(DEFAULT["c0"] + DEFAULT["c1"] * doublings)


def test_expected_error_is_the_forecast_models_default_envelope():
    factors = [1.0, 2.0, 2.5, 5.0, 30.0]
    inside = [expected_error(f, 5.0, (1.0, 20.0)) for f in factors]
    assert inside == sorted(inside) and inside[0] < inside[-1]
    assert inside == pytest.approx([_envelope(math.log2(f)) for f in factors])
    assert inside[0] == pytest.approx(math.expm1(0.03)) and inside[1] == pytest.approx(math.expm1(0.07))
    # a D/N outside the range counts as extra doublings: 4x below the smallest D/N is 2 more
    assert expected_error(2.0, 0.25, (1.0, 20.0)) == pytest.approx(_envelope(3.0))
    assert expected_error(2.0, 80.0, (1.0, 20.0)) == pytest.approx(_envelope(3.0))
    assert all(expected_error(f, 0.5, (1.0, 20.0)) > expected_error(f, 5.0, (1.0, 20.0)) for f in factors)
    assert expected_error(2.0, 0.5, None) == pytest.approx(_envelope(1.0))
    assert n_factor(50.0, 100.0, 1000.0) == 2.0 and n_factor(500.0, 100.0, 1000.0) == 1.0


@pytest.mark.integration  # composes the demo grid with Hydra
def test_the_demo_grid_spans_15x_and_its_contenders_lie_inside(capsys):
    block = _demo_design(capsys)
    assert 14.5 < block["n_span"] < 15.5 and block["n_sizes"] == 4  # 4 widths, 15x in N_quant
    by_bits = {(c["format"], c["bits"]): c for c in block["contenders"]}
    one_bit = by_bits[("kmeans", 1)]  # the 590k model: 1.6x beyond the grid, D/N inside
    assert one_bit["N"] == 589824 and 1.5 < one_bit["N_factor"] < 1.7 and one_bit["inside_dn"]
    assert one_bit["expected_error"] == pytest.approx(_envelope(math.log2(one_bit["N_factor"])))
    assert block["warnings"] == []
    text = "\n".join(render_design(block))
    assert "warning:" not in text and "1-bit kmeans   d64x12" in text
    assert f"forecast error <= {100 * one_bit['expected_error']:.2g} %" in text


def test_the_old_demo_grid_is_warned_about_its_span_and_its_contenders():
    """The grid of issue 26 (4 sizes 49k-295k, 6x; D/N from 1.698): its 1-bit contender at exactly 2x and
    just below the smallest D/N missed its forecast by 0.088 nats, the largest of the five misses."""
    rows = [{"N": n, "D": d, "P": p, "format": "kmeans" if p < 16 else "none"}
            for n in np.geomspace(49152, 294912, 4) for d in (1.698 * 294912, 1e6, 2e6)
            for p in (1.25, 2.25, 3.25, 4.25, 16.0)]
    block = design(grid_table(pd.DataFrame(rows)), get_preset("1bw-kmeans"), DEMO_VERIFY["budget_bytes"],
                   DEMO_VERIFY["D"], resolve_arch(DEMO_FAMILY))
    assert block["n_span"] == pytest.approx(6.0) and block["n_sizes"] == 4
    span, far = block["warnings"]
    assert "spans 6x in N" in span and ">= 10x" in span
    one_bit = next(c for c in block["contenders"] if c["bits"] == 1)
    assert one_bit["N"] == 589824 and one_bit["N_factor"] == pytest.approx(2.0)
    # 1 doubling in N and 0.002 below the grid's D/N: ~7.3 %, ~0.12 nats, more than its 0.088-nat miss
    assert one_bit["inside_dn"] is False and one_bit["expected_error"] == pytest.approx(0.0726, abs=2e-4)
    assert "1-bit kmeans d64x12" in far and "forecast error <= 7.3 %" in far
    inside = [c for c in block["contenders"] if c["N_factor"] == 1.0 and c["inside_dn"]]
    assert inside and all(c["expected_error"] == pytest.approx(_envelope(0.0)) for c in inside)
    assert all(f"{c['bits']}-bit" not in far for c in inside if c["bits"] < 16)
    text = "\n".join(render_design(block))
    assert text.count("\nwarning: ") == 2 and "1-bit kmeans   d64x12" in text


def _wide_grid(sizes: np.ndarray) -> pd.DataFrame:
    rows = [{"N": n, "D": d, "P": p, "format": "kmeans" if p < 16 else "none"}
            for n in sizes for d in (2e5, 1e6, 4e6) for p in (1.25, 2.25, 3.25, 4.25, 16.0)]
    return grid_table(pd.DataFrame(rows))


def test_a_wide_grid_with_its_contenders_inside_gets_no_warning():
    grid = _wide_grid(np.geomspace(4e4, 8e5, 5))  # 20x in 5 sizes, D/N 0.25-100
    block = design(grid, get_preset("1bw-kmeans"), DEMO_VERIFY["budget_bytes"], DEMO_VERIFY["D"],
                   resolve_arch(DEMO_FAMILY))
    assert block["n_span"] == pytest.approx(20.0) and block["n_sizes"] == 5
    assert len(block["contenders"]) == 5  # 1-4 bits and bf16
    assert all(c["N_factor"] == 1.0 and c["inside_dn"] for c in block["contenders"])
    assert block["warnings"] == []
    assert not any(line.startswith("warning:") for line in render_design(block))


@pytest.mark.parametrize(
    ("sizes", "warned"),
    [(np.geomspace(1e5, 1e6, 4), False),  # 10x in 4 sizes: the practice's minimum
     (np.geomspace(1e5, 1e7, 3), True),  # 100x in 3 sizes
     (np.geomspace(1e5, 9e5, 6), True)],  # 9x in 6 sizes
)
def test_span_and_size_thresholds(sizes, warned):
    block = design(_wide_grid(sizes))
    assert bool(block["warnings"]) is warned and block["contenders"] == []


def test_a_contender_beyond_the_grid_is_warned_at_twice_its_largest_n():
    grid = _wide_grid(np.geomspace(2e4, 294912, 5))  # the 590k 1-bit contender is exactly 2x beyond
    block = design(grid, get_preset("1bw-kmeans"), DEMO_VERIFY["budget_bytes"], DEMO_VERIFY["D"],
                   resolve_arch(DEMO_FAMILY))
    far = [c for c in block["contenders"] if c["N_factor"] >= MAX_FACTOR - 1e-9]
    assert [c["bits"] for c in far] == [1] and far[0]["inside_dn"]
    assert len(block["warnings"]) == 1 and "1-bit kmeans" in block["warnings"][0]
    assert math.isclose(far[0]["expected_error"], _envelope(1.0))


def test_the_full_plan_carries_the_design_block(tmp_path, capsys):
    table = tmp_path / "grid.csv"
    _wide_grid(np.geomspace(4e4, 294912, 4))[["N", "D", "P", "format"]].to_csv(table, index=False)
    argv = ["plan", str(table), "--preset", "1bw-kmeans", "--simulations", "2", "--workers", "1",
            "--grid-starts", "coarse", "--arch", DEMO_FAMILY,
            "--memory", f"{DEMO_VERIFY['budget_bytes']:.0f}"]
    assert cli.main([*argv, "--json"]) == 0
    block = json.loads(capsys.readouterr().out)["design"]
    assert block["n_sizes"] == 4 and block["tokens"] == 4e6  # --tokens' default: the grid's largest D
    assert len(block["warnings"]) == 2  # 7.4x in N; the 1-bit contender 2x beyond
    assert {"bits", "N", "N_factor", "D_over_N", "inside_dn", "expected_error"} <= set(block["contenders"][0])
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("\nwarning: ") == 2 and text.index("warning: ") < text.index("format kmeans")


def test_bad_tokens_is_one_line(capsys):
    assert cli.main(["plan", "experiment=demo", "--cost", "--preset", "1bw-kmeans", "--tokens", "lots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tokens" in err[0]
