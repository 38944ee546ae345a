"""`bitlaw plan`'s design check: before any compute, can this grid carry the forecast it is meant for?

Published practice for fitting scaling laws (Choshen et al. 2024, "A Hitchhiker's Guide to Scaling Law
Estimation", arXiv 2410.11840; the OLMo ladder, Bhagia et al. 2024; Gadre et al. 2024, "Language models scale
reliably with over-training and on downstream tasks"): fit on sizes spanning at least 10× in N with at least
4 sizes, and forecast at most 2–3× beyond the largest fitted size; errors grow fastest at the large-N,
small-D/N corner.  So the check warns

- when the grid's N (N_quant, the N the law reads) spans less than ``MIN_SPAN`` or has fewer than
  ``MIN_SIZES`` distinct sizes (sizes as ``bitlaw backtest`` counts them: N within 0.1 % is one size);
- when a contender, each bit width's largest model within the memory budget (``recommend``'s own search,
  which ``verify plan`` trains), lies ``MAX_FACTOR`` or more beyond the grid's N range, or its D/N (at the
  planned tokens) outside the grid's D/N range, with the error a forecast there is expected to carry.

The first demo grid is the case this exists for: it spanned 6× in 4 sizes and its 1-bit contender sat at
exactly 2× its largest N and just below its smallest D/N; that contender missed its forecast by 0.088 nats
(5.5 %, issue 26), the largest miss of the five.  So 2× itself is warned about (``>=``), not only beyond it.

The error expected there is fit/answer/forecast.py's model for a fit without its own backtest (``DEFAULT``,
the 90 % envelope of |log error| of 3-size fits on the public ladders, method.md §14): before any compute
there is no fit whose internal backtest could measure one.  It is read at the contender's distance in
doublings (N factor, plus the D/N excess), as ``predict`` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from fit.answer.forecast import DEFAULT_BASIS, default_model, distance, relative_error
from fit.answer.memory import BF16_BITS, BitAccounting, Shape
from fit.answer.presets import LawSource
from fit.answer.recommend import recommend
from fit.solve.resampling import anchor_mask
from fit.study.backtest import size_index
from fit.units import format_bytes, format_count

MIN_SPAN = 10.0  # the grid's N_max / N_min (Choshen et al. 2024; OLMo ladder; Gadre et al. 2024)
MIN_SIZES = 4
MAX_FACTOR = 2.0  # a contender this far beyond the grid's N range, or further, is warned about
MAX_LISTED = 4  # contenders named in the warning; --json lists them all
DN_RTOL = 1e-9  # D/N equal to the grid's bound (floating point) counts as inside

ERROR_MODEL = default_model()
ERROR_BASIS = f"fit/answer/forecast.py's {DEFAULT_BASIS} (docs/method.md §14)"


def expected_error(n_factor: float, d_over_n: float, dn_range: tuple[float, float] | None) -> float:
    """The relative forecast error at ``n_factor`` (how far beyond the fitted N range) and ``d_over_n``
    against the fitted D/N range: exp(r) − 1, with r the 90 % envelope of |log error| that
    fit/answer/forecast.py's DEFAULT model states at that distance (the upper widening of the interval
    ``predict`` would state; ``forecast_nats`` is loss times it)."""
    x = float(distance(n_factor, d_over_n, dn_range))
    return math.expm1(float(relative_error(ERROR_MODEL, x)))


def n_factor(n: float, n_min: float, n_max: float) -> float:
    """How far ``n`` lies outside [n_min, n_max], as a factor ≥ 1 either side (1: inside)."""
    return max(n / n_max, n_min / n, 1.0)


def contenders(
    grid: pd.DataFrame,
    source: LawSource,
    formats: Sequence[str],
    budget_bytes: float,
    tokens: float,
    shapes: list[Shape],
) -> list[dict[str, Any]]:
    """Per format and bit width of the grid, the largest shape within ``budget_bytes`` (``recommend``'s rows;
    the bf16 one once), placed against the grid's N and D/N ranges at D = ``tokens``."""
    n = grid["N"].to_numpy(float)
    n_min, n_max = float(n.min()), float(n.max())
    dn = grid["D"].to_numpy(float) / n
    dn_lo, dn_hi = float(dn.min()), float(dn.max())
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for fmt in formats:
        rows = grid[(grid["format"] == fmt).to_numpy() | anchor_mask(grid)]
        bits = sorted({int(b) for b in rows["bits"]})
        rec = recommend(source, budget_bytes, tokens, shapes, bits, fmt, BitAccounting())
        for row in rec.rows:
            if row.shape is None or (row.format, row.bits) in seen:
                continue
            seen.add((row.format, row.bits))
            n_q = float(row.shape.n_quant)
            d_over_n = tokens / n_q
            outside = not (dn_lo * (1 - DN_RTOL) <= d_over_n <= dn_hi * (1 + DN_RTOL))
            factor = n_factor(n_q, n_min, n_max)
            loss = row.loss if row.loss is not None and math.isfinite(row.loss) else None
            out.append({
                "format": row.format,
                "bits": row.bits,
                "model": row.shape.name,
                "N": n_q,
                "N_factor": factor,
                "D_over_N": d_over_n,
                "inside_dn": not outside,
                "expected_error": expected_error(factor, d_over_n, (dn_lo, dn_hi)),
                "loss": loss,
            })
    return out


def design(
    grid: pd.DataFrame,
    source: LawSource | None = None,
    budget_bytes: float | None = None,
    tokens: float | None = None,
    shapes: list[Shape] | None = None,
    formats: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The design block of ``bitlaw plan``: the grid's N span and sizes, the contenders (with a law source,
    a budget and shapes; at D = ``tokens``, default the grid's largest D; for ``formats``, default the
    grid's quantized formats the source has a law for) and the warnings, as JSON."""
    n = grid["N"].to_numpy(float)
    _, sizes = size_index(n)
    span = float(n.max() / n.min())
    dn = grid["D"].to_numpy(float) / n
    warnings = []
    if span < MIN_SPAN or len(sizes) < MIN_SIZES:
        warnings.append(
            f"the grid spans {span:.3g}x in N ({_count(n.min())}-{_count(n.max())}) with {len(sizes)} "
            f"size(s); a law is fitted on >= {MIN_SPAN:g}x with >= {MIN_SIZES} sizes (Choshen et al. "
            "2024; OLMo ladder; Gadre et al. 2024): widen the grid in N"
        )
    out: dict[str, Any] = {
        "warnings": warnings,
        "n_span": span,
        "n_sizes": len(sizes),
        "N_range": [float(n.min()), float(n.max())],
        "D_over_N_range": [float(dn.min()), float(dn.max())],
        "contenders": [],
        "error_basis": ERROR_BASIS,
    }
    if source is None or budget_bytes is None or not shapes:
        return out
    if formats is None:  # the grid's quantized formats the source has a law for
        quantized = grid["format"][~anchor_mask(grid)]
        formats = [str(f) for f in pd.unique(quantized) if f in source.laws or "all" in source.laws]
    D = float(grid["D"].max()) if tokens is None else float(tokens)
    found = contenders(grid, source, formats, budget_bytes, D, shapes)
    out.update(memory_bytes=float(budget_bytes), tokens=D, contenders=found)
    far = [c for c in found if c["N_factor"] >= MAX_FACTOR * (1 - DN_RTOL) or not c["inside_dn"]]
    if far:
        shown = "; ".join(_where(c) for c in far[:MAX_LISTED])
        more = f"; and {len(far) - MAX_LISTED} more" if len(far) > MAX_LISTED else ""
        warnings.append(
            f"{len(far)} of {len(found)} contender(s) at {format_bytes(budget_bytes)} and {_count(D)} tokens "
            f"lie >= {MAX_FACTOR:g}x beyond the grid's N ({_count(n.min())}-{_count(n.max())}) or outside "
            f"its D/N ({dn.min():.4g}-{dn.max():.4g}): {shown}{more}. Forecast errors: the 90 % envelope of "
            "3-size fits (method.md §14); "
            "practice forecasts <= 2-3x beyond the fitted N: raise the grid's largest N (or its smallest "
            "D/N), or lower --memory"
        )
    return out


def _where(c: dict[str, Any]) -> str:
    """One contender where it lies and its forecast error (the 90 % envelope): ``1-bit kmeans d64x12 (N 590k,
    2x, D/N 1.696 outside; forecast error <= 7.3 %, <= 0.12 nats)``."""
    nats = "" if c["loss"] is None else f", <= {c['expected_error'] * c['loss']:.2g} nats"
    dn = "inside" if c["inside_dn"] else "outside"
    return (f"{_name(c)} {c['model']} (N {_count(c['N'])}, {_times(c['N_factor'])}, D/N {c['D_over_N']:.4g} "
            f"{dn}; forecast error <= {100 * c['expected_error']:.2g} %{nats})")


def _name(c: dict[str, Any]) -> str:
    return "bf16" if c["bits"] == BF16_BITS else f"{c['bits']}-bit {c['format']}"


def _times(x: float) -> str:
    return f"{x:.3g}x" if x < 1000 else f"{x:,.0f}x"


def _count(x: float) -> str:
    return format_count(float(x))


def render_design(block: dict[str, Any]) -> list[str]:
    """Text lines: the span, then one ``warning:`` line per warning."""
    lines = [
        f"design: N spans {block['n_span']:.3g}x in {block['n_sizes']} size(s); D/N "
        f"{block['D_over_N_range'][0]:.4g}-{block['D_over_N_range'][1]:.4g}"
        + (f"; {len(block['contenders'])} contender(s) at {_count(block['tokens'])} tokens"
           if block["contenders"] else "")
    ]
    for c in block["contenders"]:
        lines.append(
            f"  contender {_name(c):<14} {c['model']:<12} N {_count(c['N']):>8} {_times(c['N_factor']):>9}  "
            f"D/N {c['D_over_N']:.4g} {'inside' if c['inside_dn'] else 'OUTSIDE'}  forecast error "
            f"<= {100 * c['expected_error']:.2g} %"
        )
    lines += [f"warning: {w}" for w in block["warnings"]]
    return lines

