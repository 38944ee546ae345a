"""The best learning rate per model size from a learning-rate sweep (`experiment=lr_sweep`).

Per size (rows grouped by N), the lr with the lowest loss, whether it is interior (not at the smallest or
largest lr tried: an optimum at an edge says "search further", not "this is the optimum"), and the optimum
of a parabola in log lr through the best point and its two neighbours (the usual estimate between grid
points; only for an interior best).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fit.errors import InputError

LR_COLUMN = "train.lr"


@dataclass(frozen=True)
class BestLR:
    N: float
    d_model: int | None
    best_lr: float
    best_loss: float
    interior: bool
    parabola_lr: float | None   # vertex of the parabola in log lr through the best point and neighbours
    tried: list[tuple[float, float]]  # (lr, loss), ascending lr


def best_learning_rates(frame: Any, lr_column: str = LR_COLUMN) -> list[BestLR]:
    """One BestLR per distinct N of a runs table with columns N, loss and `lr_column` (mean over seeds)."""
    for column in ("N", "loss", lr_column):
        if column not in frame:
            raise InputError(f"TABLE: no column {column!r}; an lr sweep table has N, loss and {lr_column}")
    results = []
    for n_value, group in frame.groupby("N"):
        by_lr = group.groupby(lr_column)["loss"].mean().sort_index()
        if len(by_lr) < 3:
            raise InputError(f"TABLE: N={n_value:g} has {len(by_lr)} learning rate(s); an lr sweep needs "
                             ">= 3")
        lrs, losses = [float(v) for v in by_lr.index], [float(v) for v in by_lr.to_numpy()]
        i = min(range(len(lrs)), key=losses.__getitem__)
        interior = 0 < i < len(lrs) - 1
        vertex = _parabola_vertex(lrs[i - 1: i + 2], losses[i - 1: i + 2]) if interior else None
        d_model = group["model.d_model"].iloc[0] if "model.d_model" in group else None
        results.append(BestLR(float(n_value), None if d_model is None else int(d_model), lrs[i], losses[i],
                              interior, vertex, list(zip(lrs, losses, strict=True))))
    return results


def _parabola_vertex(lrs: list[float], losses: list[float]) -> float | None:
    x = [math.log(v) for v in lrs]
    (x0, x1, x2), (y0, y1, y2) = x, losses
    denominator = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denominator
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denominator
    if a <= 0:
        return None
    return math.exp(-b / (2 * a))
