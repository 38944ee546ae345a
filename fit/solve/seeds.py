"""The seed spread of a fitted table: how much the measured loss itself varies between repeats of one point.

No law can predict a run more closely than run-to-run noise allows, so a recommendation's margin must exceed
it too (fit.answer.recommend.decide_margin, docs/method.md §14).  A *point* is one (format, P, N, D); its
repeats are rows that differ only in ``seed`` or in run (a checkpoint table's rows of one run lie at
different D and so are never repeats of each other).  The spread is the pooled standard deviation of the
loss in nats, sqrt(Σ (n_i − 1)·s_i² / Σ (n_i − 1)) over the points with >= 2 repeats: each point's variance
weighted by its degrees of freedom, the usual estimate of one common noise level.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

POINT = ("format", "bits", "P", "N", "D")  # the columns that name a point, where present


def seed_spread(frame: pd.DataFrame) -> dict[str, Any] | None:
    """``{"nats", "points", "rows", "basis"}`` for the rows of ``frame``, or None when no point repeats."""
    keys = [c for c in POINT if c in frame]
    if "loss" not in frame or not {"N", "D"} <= set(keys):
        return None
    loss = pd.to_numeric(frame["loss"], errors="coerce")
    groups = loss.groupby([frame[k] for k in keys], dropna=False)
    count = groups.count()
    repeated = count[count >= 2].index
    if not len(repeated):
        return None
    dof = (count[repeated] - 1).astype(float)
    var = groups.var(ddof=1)[repeated]
    spread = float(np.sqrt((var * dof).sum() / dof.sum()))
    unit = "seed" if "seed" in frame else "run"
    return {"nats": spread, "points": int(len(repeated)), "rows": int(count[repeated].sum()),
            "basis": f"pooled standard deviation of loss across {unit}s at one ({', '.join(keys)}) point"}
