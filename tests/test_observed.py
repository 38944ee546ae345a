"""Counts the report sets beside the fit: is loss ordered by bits, and where does k-means beat uniform."""

from __future__ import annotations

import pandas as pd

from fit.data.observed import bit_ordering, format_wins, render
from fit.data.simulate import KMEANS_TRUTH, simulate


def table() -> pd.DataFrame:
    frame = simulate(
        KMEANS_TRUTH, [1e5, 3e5], [5e5, 1e6], formats=("kmeans", "uniform"), gamma_by_format={"uniform": 4.0}
    )
    return frame


def test_a_law_table_is_ordered_and_kmeans_wins_with_the_smaller_gamma() -> None:
    frame = table()
    orders = {o.format: o for o in bit_ordering(frame)}
    assert set(orders) == {"kmeans", "uniform"}
    for o in orders.values():
        assert (o.ordered, o.cells, o.adjacent_ordered, o.adjacent_pairs) == (
            4,
            4,
            16,
            16,
        ) and not o.misordered
    assert format_wins(frame) == {b: (4, 4) for b in (1, 2, 3, 4)}  # gamma 3.3 < 4: more capacity per bit


def test_a_swapped_pair_is_counted_and_named() -> None:
    frame = table()
    cell = (frame["N"] == 1e5) & (frame["D"] == 5e5) & (frame["format"] == "kmeans")
    two, three = cell & (frame["bits"] == 2), cell & (frame["bits"] == 3)
    frame.loc[two, "loss"], frame.loc[three, "loss"] = (
        frame.loc[three, "loss"].values,
        frame.loc[two, "loss"].values,
    )
    o = next(o for o in bit_ordering(frame) if o.format == "kmeans")
    assert (o.ordered, o.adjacent_ordered) == (3, 15)
    assert o.misordered == ["N=100000, D=500000: 3 bits ≥ 2 bits"]
    assert "3 of 4 (N, D) cells" in render(frame)
