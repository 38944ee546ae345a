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

Figures 2, 3 and 5 (the law's answers) are drawn here, 1 and 4 (the fit against its runs) in
fit.render.plot_runs; PlotInputs and the shared styles are in fit.render.figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colors, patches, ticker
from matplotlib.figure import Figure

from fit.answer.query import n_eff_of
from fit.answer.recommend import recommend, smooth_n_eff
from fit.answer.shapes import resolve_arch
from fit.law import law_of, predict_loss
from fit.render.figure import BITS_COLOURS, PW_TICKS, PlotInputs
from fit.render.figure import save_png as _save  # one name the figures here save through (tests capture it)
from fit.render.plot_runs import plot_loss_vs_n, plot_pred_vs_obs
from fit.render.recommend_text import bits_label
from fit.units import format_bytes

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


# ----------------------------------------------------------------------------- 5. best bits vs budget


def plot_best_bits(inp: PlotInputs, path: Path) -> Path:
    fmt = inp.primary
    shapes = resolve_arch(inp.arch)
    # with the fit's entry, a budget whose margin the forecast error cannot carry names no winner, as
    # `bitlaw recommend` says (without it this figure labelled a winner that recommend withholds)
    entry = inp.fitfile.entry(fmt) if inp.fitfile is not None and fmt in inp.fitfile.formats else None
    recs = [recommend(inp.source, m, inp.tokens, shapes, inp.bits, fmt, inp.acct, entry=entry)
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
        if rec.unidentified:
            label = "not identified"
        elif rec.undecided:
            lead = bits_label(rec.leader, with_format=False) if rec.leader is not None else "none"
            label = f"not decidable\n({lead} leads)"
        else:
            label = bits_label(rec.best, with_format=False)
        flagged = bool(rec.unidentified or rec.undecided)
        ax.text(i, 1.02, label, ha="center", va="bottom", fontsize=7 if flagged else 9,
                fontweight="bold", color="#b00000" if flagged else "black")  # fmt: skip
    ax.set_xticks(x, [format_bytes(r.budget_bytes) for r in recs])
    ax.set_ylim(0, 1.2)
    ax.set_xlabel(f"weight-memory budget ({inp.arch} family)")
    what = (
        f"share of {recs[0].n_resamples} bootstrap resamples won" if bootstrapped else "winner (no bootstrap)"
    )
    ax.set_ylabel(what)
    ranked = "loss" if recs[0].ranked_by == "loss" else "N_eff (A, B, E unknown)"
    tokens = f", D = {inp.tokens:.3g} tokens" if inp.tokens else ""
    why = next((rec.unidentified for rec in recs if rec.unidentified), [])
    caveat = f"\nno winner: {why[0][:100]}" if why else ""
    if not why and any(rec.undecided for rec in recs):
        caveat = ("\nnot decidable: the leader's margin is inside the forecast error "
                  "(the shares are the fit's own resamples, not that error)")
    ax.set_title(
        f"Best bit width by budget ({fmt}{tokens}; ranked by {ranked}); label = winner, if decidable"
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
