"""Stratified bootstrap: every resample keeps the design's points (fit.solve.resampling.bootstrap_strata)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fit.solve.bootstrap import draw_counts
from fit.solve.resampling import bootstrap_strata, bootstrap_units


def _grid() -> pd.DataFrame:
    """4 sizes × (bf16 anchor, 2 k-means widths), each trunk with 3 D branches."""
    rows = []
    for n in (1e4, 2e4, 4e4, 8e4):
        for fmt, bits in (("bf16", 16), ("kmeans", 1), ("kmeans", 2)):
            trunk = f"{fmt}{bits}-{n:g}"
            for d in (5e5, 7.5e5, 1e6):
                rows.append({"run": f"{trunk}-{d:g}", "trunk": trunk, "format": fmt, "bits": bits, "P": bits,
                             "N": n, "D": d, "loss": 2.0})
    return pd.DataFrame(rows)


def test_every_resample_keeps_as_many_trunks_per_point_as_the_design() -> None:
    frame = _grid()
    unit, _ = bootstrap_units(frame)
    strata, name = bootstrap_strata(frame, unit)
    assert name == "format×P" and strata is not None and len(np.unique(strata)) == 3
    counts = draw_counts(unit, 500, seed=1, stratum_of_unit=strata)
    for s in np.unique(strata):
        assert (counts[:, strata == s].sum(axis=1) == 4).all()  # 4 trunks (sizes) at every point
    # the plain bootstrap drops every anchor trunk from some resamples; the stratified one never does
    anchor_units = np.unique(unit[frame["format"].eq("bf16").to_numpy()])
    plain = draw_counts(unit, 500, seed=1)
    assert (plain[:, anchor_units].sum(axis=1) == 0).any()
    assert (counts[:, anchor_units].sum(axis=1) > 0).all()
    # trunks are still resampled within a point: some resamples repeat a size
    assert (counts > 1).any()


def test_one_stratum_is_the_plain_bootstrap_draw_for_draw() -> None:
    frame = _grid()
    unit, _ = bootstrap_units(frame)
    one = np.zeros(int(unit.max()) + 1, dtype=int)
    assert np.array_equal(draw_counts(unit, 50, 3, one), draw_counts(unit, 50, 3))
    assert bootstrap_strata(frame.drop(columns=["P"]), unit) == (None, None)
