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
from fit.answer.presets import get_preset
from fit.answer.shapes import resolve_arch
from fit.study.design import MAX_FACTOR, design, expected_error, n_factor, render_design
from fit.study.plan import grid_table

ROOT = Path(__file__).resolve().parents[1]
DEMO_FAMILY = str(ROOT / "tests/data/demo_family_2026_12_02.yaml")
# the budget and D `make demo`'s `verify plan` chose (the grid's smallest bf16 model's memory, its largest D)
DEMO_VERIFY = json.loads((ROOT / "results/demo/verify/contenders.json").read_text())


def _demo_design(capsys: pytest.CaptureFixture[str]) -> dict:
    argv = ["plan", "experiment=demo", "--cost", "--preset", "1bw-kmeans", "--arch", DEMO_FAMILY,
            "--memory", f"{DEMO_VERIFY['budget_bytes']:.0f}", "--tokens", f"{DEMO_VERIFY['D']:.0f}", "--json"]
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)["design"]


def test_expected_error_grows_with_the_factor_and_outside_the_dn_range():
    factors = [1.0, 2.0, 2.5, 5.0, 30.0]
    inside = [expected_error(f, False) for f in factors]
    assert inside == sorted(inside) and inside[0] < inside[-1]
    assert inside[:2] == [0.0061, 0.0061] and inside[2] == 0.0090 and inside[-1] == 0.064  # method.md §13
    assert all(expected_error(f, True) >= expected_error(f, False) for f in factors)
    assert expected_error(1.0, True) == 0.040
    assert n_factor(50.0, 100.0, 1000.0) == 2.0 and n_factor(500.0, 100.0, 1000.0) == 1.0


@pytest.mark.integration  # composes the demo grid with Hydra
def test_the_demo_grid_is_warned_about_its_span_and_its_contenders(capsys):
    block = _demo_design(capsys)
    assert 5.5 < block["n_span"] < 6.5 and block["n_sizes"] == 4
    span, far = block["warnings"]
    assert "spans 6x in N" in span and ">= 10x" in span
    by_bits = {(c["format"], c["bits"]): c for c in block["contenders"]}
    one_bit = by_bits[("kmeans", 1)]
    # the demo's 1-bit contender: the 590k model that missed its forecast by 0.088 nats (issue 26)
    assert one_bit["N"] == 589824 and one_bit["N_factor"] == pytest.approx(2.0)
    assert one_bit["inside_dn"] is False and one_bit["expected_error"] == pytest.approx(0.040)
    assert "1-bit kmeans d64x12" in far and "expected error ~4 %" in far
    inside = by_bits[("kmeans", 3)]  # 197k, a grid size at D/N 5: the backtest's smallest error
    assert inside["N_factor"] == 1.0 and inside["inside_dn"] and inside["expected_error"] == 0.0061
    assert "3-bit" not in far
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
    assert math.isclose(far[0]["expected_error"], 0.0061)


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
