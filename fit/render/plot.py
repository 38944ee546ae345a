"""The five figures of a precision-law study, as PNGs (matplotlib, Agg canvas, no pyplot state).

1. ``loss_vs_n.png``      loss vs N per bit width with the fitted curves; one panel per format; colour = D.
2. ``isoloss.png``        isoloss contours over (N, P_w) at fixed D and (D, P_w) at fixed N; background = the
                          predicted uniform − k-means gap when both are fitted (1-Bit Wonder Fig. 1).
3. ``neff_vs_pw.png``     N_eff vs P_w for a family of memory budgets, each curve's optimum marked.
4. ``pred_vs_obs.png``    predicted vs observed loss, the held-out largest N shown as extrapolated.
5. ``best_bits.png``      best bit width vs budget, with the bootstrap win shares.

Where the fit saw data (its N, D, P span: the runs table, else the data file fit.json names) is drawn as a box
on the isoloss panels; defaults (fixed D, fixed N) come from inside it, and an optimum in ``neff_vs_pw`` is
starred only when its model lies inside it.  Figures are drawn to temporary names and renamed only once all
of them are drawn, so an error leaves no partial set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors, patches, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fit.answer.caveats import data_range
from fit.answer.memory import BitAccounting, resolve_arch
from fit.answer.presets import LawSource
from fit.answer.query import n_eff_of
from fit.answer.recommend import recommend, smooth_n_eff
from fit.fitfile import FitFile
from fit.law import law_of, predict_loss
from fit.render.recommend_text import bits_label
from fit.units import format_bytes

MARKERS = {1: "o", 2: "s", 3: "^", 4: "D", 5: "v", 6: "P", 7: "X", 8: "h", 16: "*"}
LINESTYLES = {1: "-", 2: "--", 3: "-.", 4: ":", 16: (0, (6, 1, 1, 1))}
BITS_COLOURS = {1: "#1b9e77", 2: "#d95f02", 3: "#7570b3", 4: "#e7298a", 5: "#66a61e", 6: "#e6ab02",
                7: "#a6761d", 8: "#666666", 16: "#1f78b4"}  # fmt: skip
PW_TICKS = [1.25, 2.25, 3.25, 4.25, 8.25, 16]


@dataclass
class PlotInputs:
    source: LawSource
    fitfile: FitFile | None = None
    runs: pd.DataFrame | None = None  # canonical columns N, D, loss, P, format (+ bits)
    tokens: float | None = None  # fixed D of the isoloss and recommendation figures
    params_n: float | None = None  # fixed N of the (D, P_w) isoloss panel
    budgets: list[float] = field(default_factory=lambda: [g * 1e9 for g in (1, 2, 4, 8, 16, 32, 64)])
    arch: str = "llama3:continuous"
    bits: tuple[int, ...] = (1, 2, 3, 4, 16)
    acct: BitAccounting = field(default_factory=BitAccounting)
    ranges: dict[str, tuple[float, float]] | None = None  # the N, D, P span of the fit's data, if known

    def __post_init__(self) -> None:
        if self.ranges is None and self.runs is not None:
            self.ranges = {k: (float(self.runs[k].min()), float(self.runs[k].max())) for k in ("N", "D", "P")}
        elif self.ranges is None and self.fitfile is not None:
            self.ranges = data_range(self.fitfile, self.primary)[0]
        # The ranking at fixed D does not depend on D (design §5); D only sets the printed losses. Without
        # a choice, use the data's largest D (a default beyond the data would draw an extrapolation as the
        # answer); only a preset, which has no data, takes 1-Bit Wonder's Fig. 1 slice (50B tokens, 3.9B N).
        if self.tokens is None:
            self.tokens = self.ranges["D"][1] if self.ranges else 50e9
        if self.params_n is None:
            self.params_n = self.ranges["N"][1] if self.ranges else 3.9e9

    @property
    def formats(self) -> list[str]:
        named = [f for f in self.source.laws if f not in ("all", "none")]
        return named or list(self.source.laws)

    @property
    def primary(self) -> str:
        """The format the single-format figures use (kmeans when fitted; a fit 'all' serves any format)."""
        return self.source.default_format

    @property
    def quant_formats(self) -> list[str]:
        """Formats to recommend for: every fitted one, with a fit 'all' standing for the primary."""
        return [self.primary if f == "all" else f for f in self.formats]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=130, format="png")  # format given: the staged name does not end in .png
    return path


def _bits_of(runs: pd.DataFrame) -> np.ndarray:
    if "bits" in runs:
        return runs["bits"].to_numpy().astype(int)
    return np.where(runs["P"] >= 8, 16, np.floor(runs["P"]).astype(int))


def _panel_rows(runs: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """The runs one format's fit saw: its own rows plus the shared bf16 anchors."""
    if fmt == "all" or "format" not in runs:
        return runs
    anchor = runs["format"].isin(["none", "bf16"]) | (runs["P"] >= 8)
    return runs[(runs["format"] == fmt) | anchor]


# ----------------------------------------------------------------------------- 1. loss vs N


def plot_loss_vs_n(inp: PlotInputs, path: Path) -> Path:
    runs = inp.runs.assign(bits=_bits_of(inp.runs))
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
        rows = _panel_rows(runs, fmt)
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
    return _save(fig, path)


# ----------------------------------------------------------------------------- 2. isoloss


def _nice_levels(values: np.ndarray, n: int = 9) -> np.ndarray:
    """Round-numbered contour levels inside the central 95 % of ``values``."""
    lo, hi = np.nanquantile(values, [0.025, 0.975])
    levels = ticker.MaxNLocator(n).tick_values(lo, hi)
    return levels[(levels > lo) & (levels < hi)]


def _loss_grid(params: dict[str, float], N: np.ndarray, D: np.ndarray, P: np.ndarray) -> np.ndarray:
    return predict_loss(params, N, D, P)


def _data_box(ax, ranges: dict[str, tuple[float, float]] | None, x_name: str) -> None:
    """Outline where the fit had data (x: N or D, y: P); outside it the colours are extrapolation."""
    if not ranges or x_name not in ranges or "P" not in ranges:
        return
    (x0, x1), (p0, p1) = ranges[x_name], ranges["P"]
    ax.add_patch(patches.Rectangle((x0, p0), x1 - x0, p1 - p0, fill=False, ec="#00a000", lw=2.0, ls="-",
                                   zorder=5, label="span of the fit's data"))  # fmt: skip
    ax.legend(loc="lower right", fontsize=7, framealpha=0.85)


def plot_isoloss(inp: PlotInputs, path: Path) -> Path:
    D_fixed, N_fixed = inp.tokens, inp.params_n
    n_axis = np.geomspace(N_fixed / 30, N_fixed * 30, 160)
    d_axis = np.geomspace(D_fixed / 30, D_fixed * 30, 160)
    p_axis = np.geomspace(1.2, 16.0, 140)
    both = all(f in inp.source.laws for f in ("kmeans", "uniform"))
    main = "kmeans" if both else inp.primary
    main_name = main if main in inp.source.laws else "all-format"
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = [
        (axes[0], n_axis, lambda x, p: (x, D_fixed, p), "N", "N (parameters)", f"fixed D = {D_fixed:.3g}"),
        (axes[1], d_axis, lambda x, p: (N_fixed, x, p), "D", "D (tokens)", f"fixed N = {N_fixed:.3g}"),
    ]
    grids = []
    for _, x_axis, args, *_ in panels:
        X, P = np.meshgrid(x_axis, p_axis)
        main_loss = _loss_grid(inp.source.law(main).params, *args(X, P))
        other = _loss_grid(inp.source.law("uniform").params, *args(X, P)) if both else None
        grids.append((X, P, main_loss, other, other - main_loss if both else main_loss))
    # One colour bar is drawn, so both panels share one norm (a per-panel scale painted a -0.016-nat gap
    # with the colour the bar gives -1.4).
    shown = np.concatenate([g[4][np.isfinite(g[4])] for g in grids])
    if both:
        limit = float(np.max(np.abs(shown))) if shown.size else 1e-9
        norm: colors.Normalize = colors.TwoSlopeNorm(0, -(limit or 1e-9), limit or 1e-9)
        cmap = "RdBu_r"
    else:
        norm, cmap = colors.Normalize(float(np.min(shown)), float(np.max(shown))), "viridis_r"
    mesh = None
    for panel, (X, P, main_loss, other, background) in zip(panels, grids, strict=True):
        ax, _, _, x_name, xlabel, title = panel
        mesh = ax.pcolormesh(X, P, background, cmap=cmap, norm=norm, shading="auto")
        levels = _nice_levels(main_loss)
        if both:
            ax.contour(X, P, other, levels=levels, colors="0.35", linestyles="--", linewidths=0.9)
        lines = ax.contour(X, P, main_loss, levels=levels, colors="black", linewidths=1.0)
        ax.clabel(lines, fmt="%g", fontsize=7, inline_spacing=2)
        ax.set_xscale("log")
        ax.set_yscale("log", base=2)
        ax.set_yticks(PW_TICKS)
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("P_w (stored bits per weight)")
        ax.set_title(title)
        _data_box(ax, inp.ranges, x_name)
    if both:
        fig.colorbar(
            mesh, ax=axes.tolist(), label="predicted loss gap, uniform − k-means (red: k-means lower)"
        )
        fig.suptitle("Isoloss contours (labels: predicted k-means loss): k-means solid, uniform dashed")
    else:
        fig.colorbar(mesh, ax=axes.tolist(), label=f"predicted loss ({main_name} fit, nats/token)")
        fig.suptitle(f"Isoloss contours of the {main_name} fit")
    return _save(fig, path)


# ----------------------------------------------------------------------------- 3. N_eff vs P_w


def _law_label(params: dict[str, float]) -> str:
    precision = law_of(params) == "precision"
    return f"γ = {params['gamma']:.2f}" if precision else f"{law_of(params)} law"


def plot_neff_vs_pw(inp: PlotInputs, path: Path) -> Path:
    fmt = inp.primary
    bits = [1, 2, 3, 4, 5, 6, 8, 16]
    p_w = np.array([inp.acct.p_w(b, fmt) for b in bits])
    anchors = resolve_arch(inp.arch.partition(":")[0])
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["plasma"]
    law = inp.source.law(fmt)
    unstarred = 0
    for i, budget in enumerate(sorted(inp.budgets)):
        n_eff = smooth_n_eff(inp.source, fmt, budget, anchors, bits, inp.acct)
        if np.all(np.isnan(n_eff)):
            continue
        colour = cmap(0.1 + 0.8 * i / max(1, len(inp.budgets) - 1))
        ax.plot(p_w, n_eff, marker="o", ms=4, color=colour, label=format_bytes(budget))
        best = int(np.nanargmax(n_eff))
        p_law = law.law_p(bits[best], p_w[best])
        n_law = n_eff[best] / n_eff_of(law.params, 1.0, p_law)  # any law form (fit.answer.query)
        # an optimum the fit never saw (a model far larger than its runs) is the law extrapolated: no star
        if _inside(inp.ranges, N=n_law, P=p_law):
            ax.plot(p_w[best], n_eff[best], marker="*", ms=15, color=colour, mec="black", zorder=4)
        else:
            unstarred += 1
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(p_w)
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel(f"P_w (stored bits per weight; {fmt}, block {inp.acct.block_size})")
    ax.set_ylabel("N_eff of the largest model that fits (parameters)")
    ax.set_title(
        f"Effective parameters under a weight-memory budget\n(smooth {inp.arch.partition(':')[0]} family, "
        f"{_law_label(law.params)}); ★ = optimum"
        + (_unstarred_note(unstarred, inp.ranges) if unstarred else ""),
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(title="weight memory", fontsize=8, title_fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, path)


def _inside(ranges: dict[str, tuple[float, float]] | None, **values: float) -> bool:
    """Inside the fit's data span (a preset has none: its published fit spans the models it is used for)."""
    if not ranges:
        return True
    return all(ranges[k][0] * (1 - 1e-9) <= v <= ranges[k][1] * (1 + 1e-9) for k, v in values.items())


def _unstarred_note(count: int, ranges: dict[str, tuple[float, float]] | None) -> str:
    n_lo, n_hi = ranges["N"] if ranges else (0, 0)
    return f"\n{count} optima not starred: their models lie outside the fitted N ({n_lo:.3g}-{n_hi:.3g}) or P"


# ----------------------------------------------------------------------------- 4. predicted vs observed


def plot_pred_vs_obs(inp: PlotInputs, path: Path) -> Path:
    runs = inp.runs.assign(bits=_bits_of(inp.runs))
    fig = Figure(figsize=(6.2, 5.6), layout="constrained")
    ax = fig.subplots()
    palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a"]
    notes = []
    for i, fmt in enumerate(inp.formats):
        rows = _panel_rows(runs, fmt)
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
    return _save(fig, path)


# ----------------------------------------------------------------------------- 5. best bits vs budget


def plot_best_bits(inp: PlotInputs, path: Path) -> Path:
    fmt = inp.primary
    shapes = resolve_arch(inp.arch)
    recs = [recommend(inp.source, m, inp.tokens, shapes, inp.bits, fmt, inp.acct)
            for m in sorted(inp.budgets)]  # fmt: skip
    bootstrapped = any(r.n_resamples for r in recs)
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(recs))
    bottom = np.zeros(len(recs))
    for b in inp.bits:
        share = np.array([next(r.win_share or (1.0 if r.best else 0.0) for r in rec.rows if r.bits == b)
                          for rec in recs])  # fmt: skip
        label = "bf16" if b == 16 else f"{b}-bit"
        ax.bar(x, share, bottom=bottom, color=BITS_COLOURS.get(b, "0.5"), label=label, width=0.7)
        bottom += share
    # resamples (or a point estimate) in which bit widths tie win for none of them
    ax.bar(x, np.clip(1 - bottom, 0, 1), bottom=bottom, color="0.85", hatch="//", label="tied", width=0.7)
    for i, rec in enumerate(recs):
        label = "not identified" if rec.unidentified else bits_label(rec.best, with_format=False)
        ax.text(i, 1.02, label, ha="center", va="bottom", fontsize=8 if rec.unidentified else 9,
                fontweight="bold", color="#b00000" if rec.unidentified else "black")  # fmt: skip
    ax.set_xticks(x, [format_bytes(r.budget_bytes) for r in recs])
    ax.set_ylim(0, 1.12)
    ax.set_xlabel(f"weight-memory budget ({inp.arch} family)")
    what = (
        f"share of {recs[0].n_resamples} bootstrap resamples won" if bootstrapped else "winner (no bootstrap)"
    )
    ax.set_ylabel(what)
    ranked = "loss" if recs[0].ranked_by == "loss" else "N_eff (A, B, E unknown)"
    tokens = f", D = {inp.tokens:.3g} tokens" if inp.tokens else ""
    why = next((rec.unidentified for rec in recs if rec.unidentified), [])
    caveat = f"\nno winner: {why[0][:100]}" if why else ""
    ax.set_title(
        f"Best bit width by budget ({fmt}{tokens}; ranked by {ranked}); label = point-estimate winner"
        + caveat,
        fontsize=9,
        color="#b00000" if why else "black",
    )
    ax.legend(title="weights", fontsize=8, title_fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, path)


def stage_plots(inp: PlotInputs, out_dir: Path) -> list[tuple[str, Path, Path]]:
    """Draw every figure the inputs allow (1 and 4 need the runs table) under temporary names in
    ``out_dir``: [(name, temporary, final)]. On any error the temporaries drawn so far are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = [("loss_vs_n", plot_loss_vs_n)] if inp.runs is not None else []
    # isoloss spans a continuous P axis: an efficiency fit knows eff only at the P it fitted
    if all(law.has_loss and law_of(law.params) != "efficiency" for law in inp.source.laws.values()):
        figures.append(("isoloss", plot_isoloss))
    if not any(law_of(law.params) == "penalty" for law in inp.source.laws.values()):
        figures.append(("neff_vs_pw", plot_neff_vs_pw))  # the penalty law has no N_eff: no such figure
    if inp.runs is not None:
        figures.append(("pred_vs_obs", plot_pred_vs_obs))
    figures.append(("best_bits", plot_best_bits))
    staged: list[tuple[str, Path, Path]] = []
    try:
        for name, draw in figures:
            temporary = out_dir / f".{name}.png.partial"
            staged.append((name, temporary, out_dir / f"{name}.png"))
            draw(inp, temporary)
    except BaseException:
        discard(staged)
        raise
    return staged


def discard(staged: list[tuple[str, Path, Path]]) -> None:
    for _, temporary, _ in staged:
        temporary.unlink(missing_ok=True)


def commit(staged: list[tuple[str, Path, Path]]) -> dict[str, Path]:
    """Rename the staged figures to their names (each rename atomic): {name: path}."""
    for _, temporary, final in staged:
        temporary.replace(final)
    return {name: final for name, _, final in staged}


def make_plots(inp: PlotInputs, out_dir: Path) -> dict[str, Path]:
    """Every figure the inputs allow, all or none (see :func:`stage_plots`)."""
    return commit(stage_plots(inp, out_dir))
