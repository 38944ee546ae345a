"""`bitlaw best-lr`: the best learning rate per size of an lr sweep, and whether it is interior."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bitlaw.cli import main as bitlaw
from fit.data.lr_search import best_learning_rates
from fit.errors import InputError


def sweep_table(optimum: dict[float, float]) -> pd.DataFrame:
    rows = []
    for n, best in optimum.items():
        for lr in (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2):
            rows.append({"N": n, "train.lr": lr, "model.d_model": 64 if n < 1e5 else 128,
                         "loss": 2.0 + 0.1 * math.log(lr / best) ** 2})
    return pd.DataFrame(rows)


def test_interior_optimum_and_its_parabola_vertex_are_found_per_size() -> None:
    results = best_learning_rates(sweep_table({49152: 5e-3, 786432: 2.5e-3}))
    small, large = results
    assert (small.best_lr, small.interior) == (4e-3, True) and small.parabola_lr == pytest.approx(5e-3)
    assert (large.best_lr, large.interior) == (2e-3, True) and large.parabola_lr == pytest.approx(2.5e-3)
    assert small.d_model == 64 and [lr for lr, _ in small.tried] == [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]


def test_an_optimum_at_the_edge_is_not_called_interior(tmp_path, capsys) -> None:
    [edge] = best_learning_rates(sweep_table({49152: 0.05}))
    assert edge.best_lr == 1.6e-2 and not edge.interior and edge.parabola_lr is None
    path = tmp_path / "runs.csv"
    sweep_table({49152: 0.05}).to_csv(path, index=False)
    assert bitlaw(["best-lr", str(path)]) == 0
    assert "AT THE EDGE" in capsys.readouterr().out


def test_bad_tables_are_one_line(tmp_path, capsys) -> None:
    with pytest.raises(InputError, match="needs >= 3"):
        best_learning_rates(sweep_table({49152: 4e-3}).query("`train.lr` < 3e-3"))
    path = tmp_path / "runs.csv"
    sweep_table({49152: 4e-3}).drop(columns="train.lr").to_csv(path, index=False)
    assert bitlaw(["best-lr", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no column 'train.lr'" in err
