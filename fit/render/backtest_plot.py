"""error_vs_factor.png: each held-out prediction's signed relative error against its N factor, one panel per
law (log x), coloured by the target's D/N; the line is the mean error in log-spaced bins of the factor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colors, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MARKERS = "os^DvPXh*"
BINS = 12


def binned_mean(factor: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean error in up to BINS log-spaced bins of the factor (each bin at its points' mean factor)."""
    n_bins = min(BINS, len(np.unique(factor)))
    edges = np.geomspace(factor.min(), factor.max() * (1 + 1e-9), n_bins + 1)
    which = np.clip(np.searchsorted(edges, factor, side="right") - 1, 0, n_bins - 1)
    used = np.unique(which)
    return (np.array([factor[which == b].mean() for b in used]),
            np.array([error[which == b].mean() for b in used]))


def plot_error_vs_factor(predictions: pd.DataFrame, path: Path) -> Path:
    """``predictions``: BacktestResult.predictions.  Writes ``path`` (PNG) and returns it."""
    laws = list(pd.unique(predictions["law"]))
    if not laws:
        raise ValueError("error_vs_factor: no predictions to plot")
    fits = list(pd.unique(predictions["fit"]))
    ratio = predictions["D_over_N"].to_numpy(dtype=float)
    norm = colors.LogNorm(vmin=ratio.min(), vmax=max(ratio.max(), ratio.min() * 1.01))
    fig = Figure(figsize=(4.2 * len(laws) + 1.0, 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(laws), sharey=True))
    scatter = None
    for ax, law in zip(axes, laws, strict=True):
        p = predictions[predictions["law"] == law]
        for i, fit in enumerate(fits):
            q = p[p["fit"] == fit]
            if q.empty:
                continue
            scatter = ax.scatter(q["N_factor"], 100 * q["error"], c=q["D_over_N"], norm=norm, cmap="viridis",
                                 marker=MARKERS[i % len(MARKERS)], s=18, alpha=0.8, label=fit)
            factor, mean = binned_mean(q["N_factor"].to_numpy(dtype=float), q["error"].to_numpy(dtype=float))
            ax.plot(factor, 100 * mean, color="0.2", lw=1.2, marker=MARKERS[i % len(MARKERS)], ms=4,
                    mfc="white", label=f"{fit}: mean" if len(fits) > 1 else "mean")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log")
        lo, hi = float(p["N_factor"].min()), float(p["N_factor"].max())
        if hi < 1.5 * lo:  # one origin of a 4-size table: one factor, a degenerate log axis (drew nothing)
            ax.set_xlim(lo / 1.5, hi * 1.5)
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("N factor: N / largest N fitted")
        ax.set_title(law)
        ax.grid(True, alpha=0.25, which="both")
        ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("(predicted - measured) / measured (%)")
    if scatter is not None:
        fig.colorbar(scatter, ax=list(axes), label="target D/N")
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=130, format="png")
    return path
