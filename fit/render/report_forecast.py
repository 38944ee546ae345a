"""The report's predictions with the error of extrapolating them (docs/method.md §14): the recommendation
across budgets and the extrapolation check, each prediction with its point, bootstrap interval, forecast
interval (fit.answer.forecast: the bootstrap interval widened by the backtest's error at that distance from
the data), N factor and D/N against the data's range; one line per fit names the error model's basis.
No new maths: every number comes from fit.answer.forecast and fit.answer.recommend.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from fit.answer.forecast import distance, model_of, relative_error
from fit.answer.recommend import Recommendation, recommend
from fit.answer.shapes import resolve_arch
from fit.errors import InputError
from fit.fitfile import FitFile
from fit.render.figure import PlotInputs
from fit.render.markdown import markdown_table, number_cell
from fit.units import format_bytes, format_count

if TYPE_CHECKING:
    from fit.render.report import ReportInputs

NO_MODEL = "no forecast error model (refit with this bitlaw)"


def basis_line(entry: dict[str, Any]) -> str:
    """Once per fit: what the forecast intervals add to the bootstrap interval, and on what basis."""
    model = entry.get("forecast_error")
    if not (isinstance(model, dict) and isinstance(model.get("c0"), int | float)):
        used = model_of(entry)  # the stated default fit.answer.forecast falls back to
        return (f"Forecast intervals: {NO_MODEL}; they use the default |log error| <= {used['c0']:.3g} + "
                f"{used['c1']:.3g} per doubling beyond the data.")
    return (f"Forecast intervals: the bootstrap interval widened by |log error| <= {model['c0']:.4f} + "
            f"{model['c1']:.4f} per doubling beyond the data ({model.get('basis', 'no basis recorded')}).")


def seed_line(entry: dict[str, Any]) -> list[str]:
    spread = entry.get("seed_spread")
    if not spread:
        return []
    return [f"Seed spread {spread['nats']:.4f} nats ({spread['basis']}, {spread['points']} points); "
            "a winner's margin must exceed sqrt(e1² + e2² + 2·s²) of the leader's and runner-up's "
            "forecast errors e and the seed spread s."]


def interval_cell(forecast: dict[str, Any] | None) -> str:
    if not forecast:
        return "–"
    lo, hi = forecast["interval"]
    return f"[{number_cell(lo)}, {number_cell(hi)}] (±{100 * forecast['relative_error']:.1f}%)"


def factor_cell(forecast: dict[str, Any] | None) -> str:
    if not forecast or not math.isfinite(forecast["N_factor"]):
        return "–"
    return f"{forecast['N_factor']:.3g}×"


def dn_cell(forecast: dict[str, Any] | None) -> str:
    """'12 in [5, 80]', or 'outside' where D/N lies beyond the fitted range (the error model adds
    doublings there)."""
    if not forecast:
        return "–"
    dn, span = forecast["D_over_N"], forecast.get("D_over_N_range")
    if not span:
        return f"{dn:.3g} (no range recorded)"
    where = "in" if span[0] <= dn <= span[1] else "**outside**"
    return f"{dn:.3g} {where} [{span[0]:.3g}, {span[1]:.3g}]"


def _best_cell(rec: Recommendation) -> str:
    b = rec.leader
    name = "bf16" if b.bits == 16 else f"{b.bits}-bit"
    if rec.undecided:
        m = rec.margin or {}
        return (f"**not decidable** (margin {m.get('margin_nats', math.nan):.4f} < forecast error "
                f"{m.get('forecast_error_nats', math.nan):.4f} nats; {name} leads)")
    return name


def section_recommendation(inp: ReportInputs, plot_inputs: PlotInputs) -> list[str]:
    source = plot_inputs.source
    shapes = resolve_arch(inp.arch)
    tokens = inp.tokens if inp.tokens is not None else math.nan
    lines = [
        "## Best bit width by memory budget",
        "",
        f"Family `{inp.arch}`, D = {number_cell(tokens)} tokens, bit widths {', '.join(map(str, inp.bits))} "
        "(16 = bf16). Per budget the winner, its model and, with bootstrap samples, the share of resamples "
        "each bit width wins; its forecast interval, N factor (N over the largest fitted N) and D/N against "
        "the fitted D/N range. No winner is named where the margin over the runner-up does not exceed their "
        "combined forecast error.",
        "",
    ]
    header = ["budget", "best", "model", "memory", "N_eff", "loss [95% CI]", "forecast interval", "N factor",
              "D/N (data range)", "bootstrap wins"]
    for fmt in plot_inputs.quant_formats:
        entry = _entry(inp.fitfile, fmt)
        rows = []
        for budget in inp.budgets:
            try:
                rec = recommend(source, budget, tokens, shapes, inp.bits, fmt, plot_inputs.acct, entry)
            except InputError as err:
                rows.append([format_bytes(budget), "–", str(err), *[""] * (len(header) - 3)])
                continue
            b = rec.leader
            shares = ", ".join(f"{r.bits}: {100 * r.win_share:.0f}%" for r in rec.rows if r.win_share)
            if rec.unidentified:  # no winner to report: say why, in the cell a reader looks at
                rows.append([format_bytes(budget), "**not identified**", "; ".join(rec.unidentified),
                             *[""] * (len(header) - 4), shares or "–"])  # fmt: skip
                continue
            band = f" [{number_cell(b.loss_ci[0])}, {number_cell(b.loss_ci[1])}]" if b.loss_ci else ""
            rows.append([format_bytes(budget), _best_cell(rec), b.shape.short(), format_bytes(b.memory_bytes),
                         format_count(b.n_eff), number_cell(b.loss) + band, interval_cell(b.forecast),
                         factor_cell(b.forecast), dn_cell(b.forecast), shares or "–"])  # fmt: skip
        lines += [f"### {fmt}", ""]
        lines += markdown_table(header, rows)
        lines += ["", _forecast_note(entry), *seed_line(entry or {}), ""]
    return lines


def _entry(fitfile: FitFile, fmt: str) -> dict[str, Any] | None:
    try:
        return fitfile.entry(fmt)
    except (InputError, KeyError):
        return None


def _forecast_note(entry: dict[str, Any] | None) -> str:
    if entry is None or "N" not in (entry.get("data_range") or {}):
        # recommend cannot place a question against the data without the fitted range
        return f"Forecast intervals: {NO_MODEL}; fit.json records no fitted data range either."
    return basis_line(entry)


def section_extrapolation(fitfile: FitFile, runs: pd.DataFrame | None = None) -> list[str]:
    """Each fit refitted without its largest N: the held-out MAPE beside the forecast error the error model
    states at that N factor (largest N over the next size down; D/N taken as inside the range)."""
    rows, bases = [], []
    for fmt in fitfile.formats:
        entry = fitfile.entry(fmt)
        ex = entry.get("extrapolation") or {}
        if not ex:
            continue
        mape = ex.get("mape")
        factor = _held_out_factor(ex.get("N"), runs, fmt)
        r = float(relative_error(model_of(entry), distance(factor, 1.0, None))) if factor else None
        stated = "–" if r is None else f"±{100 * math.expm1(r):.2f}%"
        within = "–" if r is None or ex.get("max_ape") is None else \
            ("yes" if ex["max_ape"] <= math.expm1(r) else "**no**")
        rows.append([fmt, number_cell(ex.get("N")), str(ex.get("n_points", "–")),
                     "–" if mape is None else f"{100 * mape:.2f}%",
                     "–" if ex.get("max_ape") is None else f"{100 * ex['max_ape']:.2f}%",
                     "–" if not factor else f"{factor:.3g}×", stated, within,
                     str(ex.get("reason", ""))])  # fmt: skip
        bases.append(f"- {fmt}: {basis_line(entry)}")
    pooled = fitfile.data.get("extrapolation") or {}
    if not rows and not pooled:
        return []
    lines = ["## Extrapolation", "", "Each fit refitted without its largest N, then asked to predict it; "
             "beside it the forecast error the fit states at that N factor (the refit's error model "
             "would differ little: it sees one size fewer).", ""]
    if rows:
        lines += markdown_table(["format", "held-out N", "points", "MAPE", "max APE", "N factor",
                                 "stated forecast error", "max APE within it", "note"], rows)
        lines += ["", *bases]
    if pooled.get("mape") is not None:
        lines += ["", f"Pooled MAPE over formats: {100 * pooled['mape']:.2f}%."]
    return lines + [""]


def _held_out_factor(n_held: float | None, runs: pd.DataFrame | None, fmt: str) -> float | None:
    """The held-out N over the largest N the refit kept: from the runs table (fit.json stores neither)."""
    if n_held is None or runs is None or "N" not in runs:
        return None
    rows = runs[runs["format"].isin([fmt, "none"])] if "format" in runs and fmt in set(runs["format"]) \
        else runs
    below = rows["N"][rows["N"] < float(n_held) * (1 - 1e-9)]
    return float(n_held) / float(below.max()) if len(below) else None
