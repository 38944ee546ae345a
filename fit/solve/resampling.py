"""Which rows go together: the 16-bit anchor rows that join every per-format fit, and the bootstrap's
resampling units (trunks, runs or rows) and strata (design points), so that rows of one run stay together
and every resample keeps the design's anchors."""

from __future__ import annotations

import numpy as np
import pandas as pd

ANCHOR_FORMATS = ("none", "bf16")
ANCHOR_MIN_P = 8.0  # "high precision": the capacity factor is ≥ 0.93 for any γ ≤ 3 here


def anchor_mask(frame: pd.DataFrame) -> np.ndarray:
    """The 16-bit rows that join every per-format fit (without a P column, every none/bf16 row)."""
    anchor = frame["format"].str.lower().isin(ANCHOR_FORMATS).to_numpy().copy()
    if "P" in frame:
        anchor &= frame["P"].to_numpy() >= ANCHOR_MIN_P
    return anchor


def bootstrap_units(frame: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Each row's resampling unit and its name: the trunk (branches of one training run share it; a seed is a
    separate trunk), else the run, else the row.  A row without a trunk id is its own run's unit."""
    runs = frame["run"].astype(str).to_numpy() if "run" in frame else np.arange(len(frame)).astype(str)
    if "trunk" not in frame or frame["trunk"].isna().all():  # no branched runs in this table
        return np.unique(runs, return_inverse=True)[1].reshape(-1), "run" if "run" in frame else "row"
    trunk = frame["trunk"]
    key = np.where(trunk.notna(), "trunk:" + trunk.astype(str), "run:" + pd.Series(runs, index=frame.index))
    name = "trunk"
    if "seed" in frame:
        key = key + np.where(frame["seed"].notna(), "|seed:" + frame["seed"].astype(str), "")
        name = "trunk+seed"
    return np.unique(key.astype(str), return_inverse=True)[1].reshape(-1), name


def bootstrap_strata(frame: pd.DataFrame, unit_of_row: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Each unit's stratum, the design point (format, P) of its first row, and the strata's name; (None,
    None) for a table without both columns or with one point (the plain bootstrap).  A resample then holds,
    at every point, as many trunks as the design does: the bf16 anchors that pin γ are never all dropped
    (fit.solve.bootstrap.draw_counts says why)."""
    if not {"format", "P"} <= set(frame.columns):
        return None, None
    # the rows that join every per-format fit (bf16, none) are one anchor point per P
    fmt = frame["format"].astype(str).str.lower().where(~anchor_mask(frame), "anchor")
    point = (fmt + "@" + frame["P"].astype(str)).to_numpy()
    first_row = np.unique(unit_of_row, return_index=True)[1]
    stratum = np.unique(point[first_row], return_inverse=True)[1].reshape(-1)
    if stratum.max(initial=0) == 0:
        return None, None
    return stratum, "format×P"
