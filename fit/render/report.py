"""A Markdown report of a precision-law study: data, fits with CIs and flags, extrapolation, the observed
k-means − uniform gap, γ against 1-Bit Wonder, the recommendation across budgets, the figures, and the exact
commands that produced it. Every number is computed here from fit.json and the runs table.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from fit.answer.caveats import interval_note, unidentified_params
from fit.data.observed import render as observed_counts
from fit.data.table import prepare_table, read_frame
from fit.errors import InputError
from fit.fitfile import FitFile, units_text
from fit.render.figure import PlotInputs
from fit.render.markdown import markdown_table, number_cell
from fit.render.plot import commit, discard, stage_plots
from fit.render.plot_forms import CAPTION as EFF_CAPTION
from fit.render.plot_forms import plot_eff_vs_gamma
from fit.render.report_forecast import section_extrapolation, section_recommendation
from fit.render.report_forms import FormComparison, compare_in_report, section_forms
from fit.solve.optimize import GAMMA_BOUNDS
from fit.units import format_count

ONE_BIT_WONDER_GAMMA = {"kmeans": 3.32, "uniform": 3.71}
PARAM_ORDER = ("A", "B", "E", "alpha", "beta", "gamma", "offset")
CAPTIONS = {
    "loss_vs_n": "Loss vs N per bit width, fitted curves; one panel per format, colour = training tokens D.",
    "isoloss": "Isoloss contours over (N, P_w) at fixed D and (D, P_w) at fixed N; background: predicted "
    "uniform − k-means loss gap where both are fitted.",
    "neff_vs_pw": "N_eff of the largest model that fits vs P_w, one curve per memory budget; ★ = optimum.",
    "pred_vs_obs": "Predicted vs observed loss; rings: the largest N predicted by the fit that held it out.",
    "best_bits": "Best bit width vs budget, with the share of bootstrap resamples each bit width wins.",
    "eff_vs_gamma": EFF_CAPTION,
}


@dataclass
class ReportInputs:
    fitfile: FitFile
    data_path: Path | None
    out_dir: Path
    budgets: list[float]
    tokens: float | None
    arch: str
    bits: tuple[int, ...]
    command: str  # this report's own command line
    earlier_commands: tuple[str, ...] = ()  # what produced the data (sweep, gather), in order
    tables: tuple[pd.DataFrame, pd.DataFrame] | None = None  # load_runs(data_path), when already loaded
    forms: FormComparison | None = None  # the law forms compared (set by build_report)
    form_fits: tuple[FitFile, ...] = ()  # fits of the other forms to compare as they are (--forms)


def _git_sha() -> str:
    """The working tree's commit (with '+dirty' when modified); outside a git checkout (an installed
    package), 'unknown' with the installed bitlaw version, which then names the code."""
    from sweep.contract import bitlaw_version

    here = Path(__file__).resolve().parent
    version = bitlaw_version()
    unknown = f"unknown (bitlaw {version} installed)" if version else "unknown"
    try:
        # a tracked file, or this is an installed copy inside some other repository (a venv in a checkout)
        subprocess.run(["git", "ls-files", "--error-unmatch", Path(__file__).name], cwd=here,
                       capture_output=True, timeout=10, check=True)
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        # results/ is what reports write: only code and config changes make a run "dirty"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)results"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return unknown
    return sha + ("+dirty" if dirty else "")


def section_provenance() -> list[str]:
    """When, where and from which code this report was made: a reader must be able to redo it."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.node()} ({platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores)"
    return [f"Made {when} on {machine}, Python {platform.python_version()}, bitlaw commit {_git_sha()}.", ""]


def load_runs(fitfile: FitFile, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(raw table, canonical table) — the canonical one mapped, filtered and checked as the fit's own data
    was: a NaN or text loss is refused with `bitlaw fit`'s message, unless the fit itself dropped rows (it
    ran with --drop-invalid), and then the same rows are dropped here."""
    raw = read_frame(path)
    columns = {k: v for k, v in (fitfile.data.get("columns") or {}).items() if v in raw.columns}
    info = fitfile.data.get("data") or {}
    require = ("N", "D", "loss", "P") + (("format",) if fitfile.data.get("by") else ())
    try:
        dropped = bool(info.get("dropped"))
        table = prepare_table(raw, columns, info.get("where"), require, drop_invalid=dropped,
                              drop_early=float(info.get("drop_early") or 0.0))
    except InputError as err:
        raise InputError(f"--data {path}: {err}") from None
    runs = table.frame
    if "bits" not in runs:
        runs["bits"] = np.where(runs["P"] >= 8, 16, np.floor(runs["P"])).astype(int)
    return raw, runs


def section_data(raw: pd.DataFrame, runs: pd.DataFrame, data_path: Path) -> list[str]:
    lines = ["## Data", "", f"`{data_path}`: {len(raw)} rows read, {len(runs)} usable for the law."]
    if "status" in raw:
        counts = raw["status"].astype(str).value_counts()
        lines.append("Run status: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    lines.append(
        f"N from {format_count(runs['N'].min())} to {format_count(runs['N'].max())} "
        f"({runs['N'].nunique()} sizes); "
        f"D from {format_count(runs['D'].min())} to {format_count(runs['D'].max())} tokens "
        f"({runs['D'].nunique()} budgets)."
    )
    if "format" in runs:
        # runs, not rows: a checkpoint table has several rows per run
        values, count = ("run", "nunique") if "run" in runs else ("loss", "count")
        grid = runs.pivot_table(index="format", columns="bits", values=values, aggfunc=count, fill_value=0)
        lines += ["", "Runs per format and bit width:", ""]
        lines += markdown_table(
            ["format", *(str(b) for b in grid.columns)],
            [[str(f), *(str(int(v)) for v in row)] for f, row in grid.iterrows()],
        )
    return lines + [""]


def section_fits(fitfile: FitFile) -> list[str]:
    lines = [
        "## Fits",
        "",
        f"Law `{fitfile.law}`, objective `{fitfile.data.get('loss')}` "
        f"(δ = {fitfile.data.get('delta')}), N convention: {fitfile.data.get('n_convention', 'quant')}.",
        "",
    ]
    for fmt in fitfile.formats:
        entry = fitfile.entry(fmt)
        ci = entry.get("bootstrap") or {}
        unidentified = unidentified_params(entry)
        rows = []
        for name in PARAM_ORDER:
            if name in unidentified and name in entry:  # flat objective: the value is no measurement
                rows.append([name, f"{number_cell(float(entry[name]), 6)} (not identified)",
                             f"not identified (flag {name}_unidentified)"])  # fmt: skip
            elif name in entry:
                band = ci.get(name)
                band_text = f"[{number_cell(float(band[0]))}, {number_cell(float(band[1]))}]" if band else "–"
                note = interval_note(entry, name)
                band_text += f" ({note})" if note else ""
                rows.append([name, number_cell(float(entry[name]), 6), band_text])
        lines += [f"### {fmt}", ""]
        lines += markdown_table(["parameter", "estimate", "95% bootstrap CI"], rows)
        status = "converged" if entry.get("converged") else "**not converged**"
        lines += [
            "",
            f"{entry.get('n_points', '?')} points from {units_text(entry)}; objective "
            f"{number_cell(entry.get('objective'))}, {status}, "
            f"‖∇‖ = {number_cell(entry.get('grad_norm'), 2)}.",
        ]
        flags = entry.get("flags") or []
        lines += [f"- **flag** {flag}" for flag in flags] or ["No flags."]
        lines.append("")
    return lines


def section_gamma(fitfile: FitFile) -> list[str]:
    rows = []
    for fmt in fitfile.formats:
        entry = fitfile.entry(fmt)
        if "gamma" not in entry:
            continue
        band = (entry.get("bootstrap") or {}).get("gamma")
        reference = ONE_BIT_WONDER_GAMMA.get(fmt)
        if "gamma" in unidentified_params(entry):
            # a flat objective in γ: neither agreement nor contradiction can be claimed
            rows.append([fmt, "not identified", "not identified", number_cell(reference),
                         "– (γ not identified: flat objective, flag gamma_unidentified)"])  # fmt: skip
            continue
        inside = (
            "–" if not band or reference is None else ("yes" if band[0] <= reference <= band[1] else "no")
        )
        if band and (band[0] <= GAMMA_BOUNDS[0] * 1.001 or band[1] >= GAMMA_BOUNDS[1] / 1.001):
            # a CI that runs into the fitter's γ bounds says "not identified", not "agrees"
            inside += " (CI reaches a γ bound: not identified)"
        note = interval_note(entry, "gamma")
        if note:
            inside += f" ({note})"
        rows.append(
            [
                fmt,
                number_cell(float(entry["gamma"])),
                f"[{number_cell(band[0])}, {number_cell(band[1])}]" if band else "–",
                number_cell(reference),
                inside,
            ]
        )
    if not rows:
        return []
    lines = ["## γ per format, against 1-Bit Wonder", ""]
    lines += markdown_table(["format", "γ", "95% CI", "1-Bit Wonder γ", "1BW inside CI"], rows)
    lines += [
        "",
        "1-Bit Wonder fits P_w = n + 0.25 (block 64, bf16 scales) on Llama-3 models up to billions of "
        "parameters; a smaller γ means capacity saturates at fewer bits.",
        "",
    ]
    return lines


def section_format_gap(runs: pd.DataFrame) -> list[str]:
    """Observed k-means vs uniform loss at every size, token budget and bit width where both were run
    (mean over repeats)."""
    if "format" not in runs or not {"kmeans", "uniform"} <= set(runs["format"]):
        return []
    both = runs[runs["format"].isin(["kmeans", "uniform"])]
    table = both.pivot_table(
        index=["N", "D", "bits"], columns="format", values="loss", aggfunc="mean"
    ).dropna()
    if table.empty:
        return []
    table["gap"] = table["uniform"] - table["kmeans"]
    wins = int((table["gap"] > 0).sum())
    bits = sorted(table.index.get_level_values("bits").unique())
    rows = []
    for (n, d), cell in table.groupby(level=["N", "D"]):
        by_bits = cell.droplevel(["N", "D"])
        row = [format_count(n), format_count(d)]
        for b in bits:
            r = by_bits.loc[b] if b in by_bits.index else None
            row.append("–" if r is None else f"{r.kmeans:.3f} / {r.uniform:.3f} ({r.gap:+.3f})")
        rows.append(row)
    lines = [
        "## k-means vs uniform (observed)",
        "",
        f"Cells: k-means loss / uniform loss (gap = uniform − k-means; positive favours k-means). k-means is "
        f"lower in {wins} of {len(table)} matched (N, D, bits) cells.",
        "",
    ]
    lines += markdown_table(["N", "D", *(f"{int(b)}-bit" for b in bits)], rows)
    by_bits = table.groupby(level="bits")["gap"].agg(["mean", "min", "max"])
    lines += ["", "Gap by bit width over all sizes and budgets:", ""]
    lines += markdown_table(
        ["bits", "mean gap", "min", "max"],
        [
            [str(int(b)), f"{r['mean']:+.4f}", f"{r['min']:+.4f}", f"{r['max']:+.4f}"]
            for b, r in by_bits.iterrows()
        ],
    )
    return lines + ["", "### Counts from the runs alone (no fit)", "", observed_counts(runs)]


def build_report(inp: ReportInputs) -> Path:
    """Write DIR/report.md and DIR/plots/*.png; returns the report's path."""
    from fit.answer.fit_source import source_from_fit

    inp.out_dir.mkdir(parents=True, exist_ok=True)
    source = source_from_fit(inp.fitfile)
    raw = runs = None
    if inp.tables is not None:
        raw, runs = inp.tables
    elif inp.data_path is not None:
        raw, runs = load_runs(inp.fitfile, inp.data_path)
    plot_inputs = PlotInputs(source, inp.fitfile, runs, inp.tokens, None, inp.budgets, inp.arch, inp.bits)
    inp.tokens = plot_inputs.tokens  # its default: the largest D of the fit's data
    staged = stage_plots(plot_inputs, inp.out_dir / "plots")
    try:
        forms = compare_in_report(inp.fitfile, runs, workers=2, given=inp.form_fits)
        if "efficiency" in forms.documents and "precision" in forms.documents:
            temporary = inp.out_dir / "plots" / ".eff_vs_gamma.png.partial"
            staged.append(("eff_vs_gamma", temporary, inp.out_dir / "plots" / "eff_vs_gamma.png"))
            plot_eff_vs_gamma(forms.documents["efficiency"], forms.documents["precision"], temporary)
        inp.forms = forms
        report = _write_report(inp, plot_inputs, raw, runs, {name: final for name, _, final in staged})
    except BaseException:
        discard(staged)
        raise
    commit(staged)  # the figures only now, so an error above leaves neither them nor report.md half-made
    return report


def _write_report(
    inp: ReportInputs, plot_inputs: PlotInputs, raw: pd.DataFrame | None, runs: pd.DataFrame | None,
    plots: dict[str, Path],
) -> Path:  # fmt: skip
    lines = ["# bitlaw report", "", f"Fit: `{inp.fitfile.path}`.", ""]
    lines += section_provenance()
    lines += ["## Commands", "", "```sh", *inp.earlier_commands]
    fit_command = inp.fitfile.data.get("command")
    lines += [fit_command] if fit_command else ["# (fit.json records no command line)"]
    lines += [inp.command, "```", ""]
    if runs is not None:
        lines += section_data(raw, runs, inp.data_path)
    lines += section_fits(inp.fitfile)
    lines += section_gamma(inp.fitfile)
    lines += section_extrapolation(inp.fitfile, runs)
    if runs is not None:
        lines += section_format_gap(runs)
    lines += section_recommendation(inp, plot_inputs)
    if inp.forms is not None:
        lines += section_forms(inp.forms)
    lines += ["## Figures", ""]
    for name, path in plots.items():
        relative = path.relative_to(inp.out_dir).as_posix()
        lines += [f"![{name}]({relative})", "", f"*{CAPTIONS[name]}*", ""]
    report = inp.out_dir / "report.md"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(report)
    return report


