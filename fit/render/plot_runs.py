"""The fit against its runs (both need the runs table): loss vs N with the fitted curves, and predicted vs
observed loss with the held-out largest N drawn as extrapolated.  Figures 1 and 4 of fit.render.plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fit.law import predict_loss
from fit.render.figure import LINESTYLES, MARKERS, PlotInputs, bits_of, panel_rows, save_png

# ----------------------------------------------------------------------------- 1. loss vs N


def plot_loss_vs_n(inp: PlotInputs, path: Path) -> Path:
    runs = inp.runs.assign(bits=bits_of(inp.runs))
    formats = inp.formats
    fig = Figure(figsize=(5.2 * len(formats) + 1.2, 4.6), layout="constrained")
    axes = fig.subplots(1, len(formats), sharey=True, squeeze=False)[0]
    norm = colors.LogNorm(runs["D"].min(), runs["D"].max() * 1.0001)
    # viridis without its pale yellow end, which vanishes on white
    cmap = colors.ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.82, 256)))
    grid_n = np.geomspace(runs["N"].min() / 1.5, runs["N"].max() * 1.5, 100)
    seen_bits: set[int] = set()
    for ax, fmt in zip(axes, formats, strict=True):
        params = inp.source.law(fmt).params
        rows = panel_rows(runs, fmt)
        for bits, group in rows.groupby("bits"):
            seen_bits.add(int(bits))
            ax.scatter(
                group["N"],
                group["loss"],
                c=group["D"],
                cmap=cmap,
                norm=norm,
                s=36,
                marker=MARKERS.get(int(bits), "o"),
                edgecolors="black",
                linewidths=0.4,
                zorder=3,
            )
            P = float(group["P"].median())
            for D in np.unique(group["D"]):
                ax.plot(
                    grid_n,
                    predict_loss(params, grid_n, D, P),
                    color=cmap(norm(D)),
                    ls=LINESTYLES.get(int(bits), "-"),
                    lw=1.1,
                    alpha=0.85,
                )
        title = "all formats" if fmt == "all" else f"{fmt} (+ bf16 anchors)"
        gamma = params.get("gamma")
        ax.set_title(title + (f", γ = {gamma:.2f}" if gamma else ""))
        ax.set_xscale("log")
        ax.set_xlabel("N (parameters the law counts)")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("final validation loss (nats/token)")
    handles = [
        Line2D(
            [],
            [],
            color="0.3",
            marker=MARKERS.get(b, "o"),
            ls=LINESTYLES.get(b, "-"),
            label="bf16 (16 bits)" if b == 16 else f"{b} bit",
        )
        for b in sorted(seen_bits)
    ]
    axes[-1].legend(handles=handles, title="weights (points; fitted curves)", fontsize=8, title_fontsize=8)
    fig.colorbar(
        matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes.tolist(), label="training tokens D"
    )
    fig.suptitle("Loss vs model size: observed runs and the fitted precision law")
    return save_png(fig, path)


# ----------------------------------------------------------------------------- 4. predicted vs observed


def plot_pred_vs_obs(inp: PlotInputs, path: Path) -> Path:
    runs = inp.runs.assign(bits=bits_of(inp.runs))
    fig = Figure(figsize=(6.2, 5.6), layout="constrained")
    ax = fig.subplots()
    palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a"]
    notes = []
    for i, fmt in enumerate(inp.formats):
        rows = panel_rows(runs, fmt)
        own = rows if fmt == "all" or "format" not in rows else rows[~rows["format"].isin(["none", "bf16"])]
        pred = predict_loss(inp.source.law(fmt).params, own["N"], own["D"], own["P"])
        ax.scatter(own["loss"], pred, s=22, color=palette[i % 4], alpha=0.8, label=f"{fmt}: fit on all runs")
        extrap = (inp.fitfile.entry(fmt).get("extrapolation") if inp.fitfile else None) or {}
        if extrap.get("params") and extrap.get("N"):
            held = rows[np.isclose(rows["N"], extrap["N"])]
            held_pred = predict_loss(extrap["params"], held["N"], held["D"], held["P"])
            ax.scatter(
                held["loss"],
                held_pred,
                s=90,
                facecolors="none",
                edgecolors=palette[i % 4],
                linewidths=1.8,
                label=f"{fmt}: largest N ({extrap['N']:.3g}) predicted without it",
            )
            if extrap.get("mape") is not None:
                notes.append(f"{fmt} extrapolation MAPE {100 * extrap['mape']:.2f}%")
    anchors = runs[runs["format"].isin(["none", "bf16"])] if "format" in runs else runs.iloc[:0]
    if len(anchors):
        pred = predict_loss(inp.source.law(inp.primary).params, anchors["N"], anchors["D"], anchors["P"])
        ax.scatter(
            anchors["loss"], pred, s=40, marker="*", color="black", label=f"bf16 anchors ({inp.primary} fit)"
        )
    lo = float(min(runs["loss"].min(), ax.dataLim.y0))
    hi = float(max(runs["loss"].max(), ax.dataLim.y1))
    pad = 0.03 * (hi - lo)
    ax.plot(
        [lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls="--", label="predicted = observed"
    )
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("observed final validation loss (nats/token)")
    ax.set_ylabel("predicted loss (nats/token)")
    ax.set_title("Predicted vs observed" + (f"\n{'; '.join(notes)}" if notes else ""), fontsize=10)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7, loc="upper left")
    return save_png(fig, path)
