"""Where a forecast test's budget lies against the grid: ``inside`` its envelope or ``beyond`` it.

`bitlaw verify plan --envelope inside|beyond` picks the weight budget itself, from the family and the grid
alone (no fit, no measured loss), so the budget is fixed before any contender trains:

- **inside**: the largest budget at which every bit width's largest model lies within [N_min, 1.5·N_max] of
  the grid and its D/N within the grid's D/N range: the law is asked only where it was fitted (or a step
  beyond its largest size, as published forecasts are, Choshen et al. 2024);
- **beyond**: the smallest budget at which the largest contender is at least 2·N_max: the law is asked to
  extrapolate, and its forecast interval says by how much more it may miss.

Each candidate budget is the weight memory of one (shape, bit width): between two of them no contender
changes, so the chosen budget is the tightest one that holds its contenders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fit.answer.memory import BitAccounting, Shape, shape_bytes
from fit.errors import InputError

ENVELOPES = ("inside", "beyond")
INSIDE_N_FACTOR = 1.5  # inside: no contender beyond 1.5x the grid's largest N
BEYOND_N_FACTOR = 2.0  # beyond: the largest contender at least 2x the grid's largest N


@dataclass(frozen=True)
class GridSpan:
    """The grid's N_quant and D/N ranges (what a contender is inside or beyond)."""

    n_min: float
    n_max: float
    dn_min: float
    dn_max: float

    @classmethod
    def of(cls, grid: pd.DataFrame) -> GridSpan:
        n = pd.to_numeric(grid["N_quant"], errors="coerce").to_numpy(dtype=float)
        d = pd.to_numeric(grid["D"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(n) & np.isfinite(d) & (n > 0)
        if not ok.any():
            raise InputError("--runs: no row with a positive N_quant and a D to measure the grid's span on")
        return cls(float(n[ok].min()), float(n[ok].max()), float((d[ok] / n[ok]).min()),
                   float((d[ok] / n[ok]).max()))

    def inside(self, n_quant: float, D: float) -> bool:
        return (self.n_min <= n_quant <= INSIDE_N_FACTOR * self.n_max
                and self.dn_min <= D / n_quant <= self.dn_max)


def contenders_at(budget: float, shapes: list[Shape], bits: tuple[int, ...], fmt: str,
                  acct: BitAccounting) -> dict[int, Shape | None]:
    """Each bit width's largest shape (by N_quant) whose weights fit ``budget`` bytes."""
    out: dict[int, Shape | None] = {}
    for b in bits:
        fitting = [s for s in shapes if shape_bytes(s, acct.p_w(b, fmt)) <= budget]
        out[b] = max(fitting, key=lambda s: (s.n_quant, s.n_total)) if fitting else None
    return out


def envelope_budget(envelope: str, shapes: list[Shape], grid: pd.DataFrame, D: float,
                    bits: tuple[int, ...], fmt: str, acct: BitAccounting) -> float:
    """The budget (bytes) of ``envelope`` (module docstring) at D tokens."""
    if envelope not in ENVELOPES:
        raise InputError(f"--envelope: {envelope!r}; allowed: {', '.join(ENVELOPES)}")
    span = GridSpan.of(grid)
    candidates = sorted({shape_bytes(s, acct.p_w(b, fmt)) for s in shapes for b in bits})
    chosen = None
    for budget in candidates:
        picked = contenders_at(budget, shapes, bits, fmt, acct)
        if any(s is None for s in picked.values()):
            continue
        sizes = [s.n_quant for s in picked.values() if s is not None]
        if envelope == "inside" and all(span.inside(s.n_quant, D) for s in picked.values() if s):
            chosen = budget  # keep the largest
        if envelope == "beyond" and max(sizes) >= BEYOND_N_FACTOR * span.n_max:
            return budget  # the smallest
    if chosen is None:
        raise InputError(
            f"--envelope {envelope}: no budget of this family puts every contender "
            + (f"within [{span.n_min:,.0f}, {INSIDE_N_FACTOR}x{span.n_max:,.0f}] N_quant and D/N "
               f"{span.dn_min:.3g}-{span.dn_max:.3g} at D = {D:,.0f}" if envelope == "inside"
               else f"at >= {BEYOND_N_FACTOR}x the grid's largest N ({span.n_max:,.0f})")
            + "; choose --memory yourself or another --arch / --tokens"
        )
    return chosen
