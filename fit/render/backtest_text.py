"""The backtest as a printed table, from ``BacktestResult.to_dict()``: a saved backtest.json renders too."""

from __future__ import annotations

from typing import Any

from fit.units import format_count

HEADER = ("law", "fit", "origins", "held-out", "mean err", "mean |err|", "max |err|", "largest factor",
          "corner (N, D/N): err", "|err|/2x", "forecast interval: held, half-width", "AIC all sizes")


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}%" if signed else f"{100 * value:.2f}%"


def _row(s: dict[str, Any]) -> tuple[str, ...]:
    far, c = s["largest_factor"], s["corner"]
    slope = s.get("abs_error_per_doubling")
    return (
        s["law"], s["fit"], str(s["origins"]), str(s["n"]), _pct(s["mean_error"]),
        _pct(s["mean_abs_error"], False), _pct(s["max_abs_error"], False),
        f"x{far['N_factor']:.3g}: {_pct(far['mean_abs_error'], False)}",
        f"{format_count(c['N'])}, {c['D_over_N']:.3g}: {_pct(c['worst_error'])}",
        "-" if slope is None else f"{100 * slope:+.2f}pp",
        _interval(s.get("forecast_interval")),
        "-" if s.get("aic") is None else f"{s['aic']:.1f}",
    )


def _interval(f: dict[str, Any] | None) -> str:
    if not f:
        return "-"
    ratio = f.get("half_width_over_error")
    return (f"{100 * f['coverage']:.0f}% of {f['n']}, {_pct(f['mean_half_width'], False)}"
            + ("" if ratio is None else f" ({ratio:.2f}x mean |err|)"))


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def format_backtest(doc: dict[str, Any]) -> str:
    """The summary table, the preferred law per fit, and what was skipped."""
    sizes, origins = doc["sizes"], doc["origins"]
    ks = [o["k"] for o in origins]
    lines = [
        f"backtest: {len(sizes)} sizes, N {format_count(sizes[0])}-{format_count(sizes[-1])}; "
        f"{len(origins)} origin(s), fitting the smallest {_span(ks)} sizes and predicting every larger run "
        f"({doc['n_predictions']} predictions); error = {doc['error']}",
    ]
    if doc["summary"]:
        lines += _columns([HEADER, *(_row(s) for s in doc["summary"])])
    lines.append("corner: the largest held-out N at its smallest D/N, from the origin that extrapolates "
                 "furthest; |err|/2x: growth of |error| per doubling of the N factor")
    lines.append("forecast interval: the share of held-out runs inside the interval each origin's fit would "
                 "state (its error model from its own smaller sizes, the default at the first origin), and "
                 "its mean half-width")
    lines.append(f"preferred law ({doc['preference_rule']}):")
    for name, pref in doc["preferred"].items():
        if pref.get("law") is None:
            lines.append(f"  {name}: none ({pref.get('reason')})")
            continue
        scores = ", ".join(f"{law} {_pct(v, False)}" for law, v in pref["mean_abs_error"].items())
        tie = "; tie broken by the largest factor" if pref["tie_broken_by_largest_factor"] else ""
        aic = pref.get("aic_prefers")
        against = "" if aic is None else f"; AIC on all sizes prefers {aic}"
        lines.append(f"  {name}: {pref['law']} (mean |err| {scores}; {pref['n_common']} predictions{tie})"
                     f"{against}")
    lines += _flag_lines(doc["origins"])
    for skip in doc["skipped"]:
        fit = f" {skip['fit']}" if skip.get("fit") else ""
        lines.append(f"skipped: origin {skip['origin']} {skip['law']}{fit}: {skip['reason']}")
    return "\n".join(lines)


def _flag_lines(origins: list[dict[str, Any]]) -> list[str]:
    """The fit flags raised at the origins, per law and fit: a held-out error from an unidentified or
    unconverged fit says more about the fit than about the law."""
    seen: dict[tuple[str, str, str], list[int]] = {}
    for origin in origins:
        for law, fits in origin["fits"].items():
            for name, fit in fits.items():
                for flag in fit.get("flags", []):
                    seen.setdefault((law, name, flag), []).append(origin["k"])
    return [f"flag: {law} {name}: {flag} at {len(ks)} of {len(origins)} origins (k = {_span(ks)})"
            for (law, name, flag), ks in seen.items()]


def _span(ks: list[int]) -> str:
    if not ks:
        return "-"
    if ks == list(range(ks[0], ks[-1] + 1)):
        return str(ks[0]) if len(ks) == 1 else f"{ks[0]}..{ks[-1]}"
    return ", ".join(map(str, ks))
