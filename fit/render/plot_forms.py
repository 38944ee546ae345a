"""eff_vs_gamma.png: the efficiency fit's per-bit eff(P), with bootstrap intervals, against the precision
law's curve 1 − exp(−P/γ) (issue 14 item 2).  One γ describes the data only if the points sit on the curve;
QuEST's published effs imply a γ that changes with bits, which this figure makes visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fit.answer.caveats import unidentified_params
from fit.law import FULL_P, capacity

CAPTION = (
    "Per-bit efficiency eff(P) of the efficiency-law fit (points, bootstrap 95 % intervals) against the "
    "precision law's 1 − exp(−P/γ) (line; band: γ's bootstrap interval; dashed, no band: γ not identified "
    "by the objective); eff = 1 at 16 bits by definition."
)


def plot_eff_vs_gamma(efficiency: dict[str, Any], precision: dict[str, Any], path: Path) -> Path:
    """``efficiency`` / ``precision``: the two fit.json-like documents (fit.render.report_forms); one panel
    per
    format both fitted.  Writes ``path`` (PNG, whatever its suffix) and returns it."""
    formats = [f for f in efficiency["fits"] if f in precision["fits"]]
    if not formats:
        raise ValueError("eff_vs_gamma: the efficiency and precision fits share no format")
    fig = Figure(figsize=(5.0 * len(formats), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(formats), sharey=True))
    grid = np.geomspace(1.0, FULL_P, 200)
    for ax, fmt in zip(axes, formats, strict=True):
        eff_entry, prec_entry = efficiency["fits"][fmt], precision["fits"][fmt]
        gamma, offset = float(prec_entry["gamma"]), float(prec_entry.get("offset", 0.0) or 0.0)
        unidentified = "gamma" in unidentified_params(prec_entry)
        # a γ the objective does not identify is drawn dashed, without a band: its value is no measurement
        label = "1 − exp(−P/γ), γ not identified" if unidentified else f"1 − exp(−P/γ), γ = {gamma:.3g}"
        style = "--" if unidentified else "-"
        ax.plot(grid, capacity(grid, gamma, offset), color="C0", ls=style, label=label)
        band = (prec_entry.get("bootstrap") or {}).get("gamma")
        if band and None not in band and not unidentified:
            curves = [capacity(grid, float(g), offset) for g in band]
            ax.fill_between(grid, np.minimum(*curves), np.maximum(*curves), color="C0", alpha=0.15)
        effs = {float(p): float(v) for p, v in (eff_entry.get("eff") or {}).items()}
        ci = {float(p): v for p, v in (eff_entry.get("eff_ci") or {}).items()}
        ps = sorted(effs)
        values = np.array([effs[p] for p in ps])
        lo = np.array([ci[p][0] if p in ci and ci[p][0] is not None else effs[p] for p in ps])
        hi = np.array([ci[p][1] if p in ci and ci[p][1] is not None else effs[p] for p in ps])
        yerr = np.vstack([np.maximum(values - lo, 0), np.maximum(hi - values, 0)])
        label = "eff(P), efficiency fit" + (" (95 % CI)" if ci else "")
        ax.errorbar(ps, values, yerr=yerr, fmt="o", color="C3", capsize=3, label=label)
        ax.plot([FULL_P], [1.0], marker="s", color="0.3", ls="none", label="bf16: eff = 1")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16])
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("P (bits per weight, incl. scales)")
        ax.set_title(fmt)
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("N_eff / N")
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=130, format="png")
    return path
