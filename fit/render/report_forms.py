"""The report's law-form comparison (issue 14 item 2): the precision (γ), efficiency (one eff per P),
penalty (D-dependent QAT term) and coupled ((N term + D term)^k) forms fitted to the same rows with the same
objective, compared per format on held-out error (leave-largest-N-out MAPE) and AIC/BIC
(fit.solve.compare.compare_forms).

The report's own fit.json is one of the four; the others are refitted here with its options (columns,
--where, loss, δ, --by, tie, two-stage).  To keep ``bitlaw report`` to seconds: the extra forms use the
coarse start grid (their Chinchilla bases are screened from it; fit/solve/staged.py), no γ profile, and only
the
efficiency form is bootstrapped, ``EFF_BOOTSTRAP`` resamples, for the eff(P) figure's intervals; the penalty
form gets none (docs/method.md §8); nor does the coupled form, which a format with < 3 sizes leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fit.errors import InputError
from fit.fitfile import FitFile
from fit.render.markdown import number_cell
from fit.solve.compare import compare_forms

FORMS = ("precision", "efficiency", "penalty", "coupled")
HEADER = "| form | k | held-out MAPE | AIC | ΔAIC | BIC | ΔBIC | flags |"
EFF_BOOTSTRAP = 20  # resamples of the efficiency form: a rough 95 % band for the figure, ~1 s


@dataclass
class FormComparison:
    documents: dict[str, dict[str, Any]]  # law -> a fit.json-like document (the report's own among them)
    rows: dict[str, list[dict[str, Any]]]  # compare_forms: format -> rows sorted by AIC
    skipped: str = ""  # why there is no comparison (then documents/rows are empty)


def compare_in_report(
    fitfile: FitFile, runs: Any | None, workers: int = 1, given: tuple[FitFile, ...] = ()
) -> FormComparison:
    """Fit the forms the report's fit.json is not, on its rows (``runs``: fit.render.report.load_runs'
    canonical
    table, already mapped and filtered as the fit's data was), and compare all three.  ``given``: fits of
    the other forms already made (``bitlaw report --forms``), used as they are instead of refitted; the
    comparison refuses them unless they were fitted to the same rows with the same objective."""
    data = fitfile.data
    if runs is None:
        return FormComparison({}, {}, "no runs table given (--data): nothing to refit the other forms on")
    if fitfile.law not in FORMS:
        return FormComparison({}, {}, f"the fit is {fitfile.law!r}, which has no bits-per-weight term")
    per_format = data.get("by") == "format" or "all" not in data["fits"]  # (older files lack "by")
    if not per_format or (data.get("options") or {}).get("shared"):
        return FormComparison({}, {}, "it is per format: it needs a --by format fit (not --shared)")
    from fit.data.table import prepare_table
    from fit.solve.objective import Objective
    from fit.solve.pipeline import FitOptions, run_fits

    options = data.get("options") or {}
    info = data.get("data") or {}
    table = prepare_table(runs, require=("N", "D", "loss", "P", "format"))
    objective = Objective(
        str(data.get("loss", "huber")), float(data.get("delta", 1e-3)), str(data.get("space", "log")),
        float(data.get("asym_weight") or 10.0),
    )
    keep = {k: data.get(k) for k in ("loss", "delta", "space", "by")}
    documents = {fitfile.law: _with_information(data, table.frame, objective)}
    check_given_forms(fitfile, given)
    documents.update({other.law: other.data for other in given})
    for law in FORMS:
        if law in documents:
            continue
        opts = FitOptions(
            law=law, by="format", tie=bool(options.get("tie_exponents")), objective=objective, grid="coarse",
            bootstrap=EFF_BOOTSTRAP if law == "efficiency" else 0, seed=int(options.get("seed") or 0),
            workers=workers, progress=False, profile=False, two_stage=bool(options.get("two_stage")),
        )
        try:
            documents[law] = {"law": law, **keep, "data": info, **run_fits(table, opts)}
        except InputError:
            if law != "coupled":  # it alone refuses a format with < 3 sizes; the other forms still compare
                raise
    return FormComparison(documents, compare_forms(documents))


def check_given_forms(fitfile: FitFile, given: tuple[FitFile, ...]) -> None:
    """At most one fit of each form, none of them the report's own form."""
    seen = {fitfile.law}
    for other in given:
        if other.law not in FORMS or other.law in seen:
            raise InputError(
                f"--forms: {other.path} is a {other.law!r} fit; allowed: one fit of each form other than the "
                f"report's {fitfile.law!r} ({', '.join(f for f in FORMS if f != fitfile.law)})"
            )
        seen.add(other.law)


def _with_information(data: dict[str, Any], frame: Any, objective: Any) -> dict[str, Any]:
    """The report's own fit.json, with AIC/BIC added to entries written before fits recorded them (the
    same fit.solve.diagnostics.information on the same rows: the format's own plus the 16-bit anchors)."""
    import numpy as np

    from fit.law import PRECISION_PARAMS, predict_loss
    from fit.solve.diagnostics import information
    from fit.solve.resampling import anchor_mask

    fits = {}
    anchor = anchor_mask(frame)
    for fmt, entry in data["fits"].items():
        if entry.get("information") or "gamma" not in entry:
            fits[fmt] = entry
            continue
        rows = frame[(frame["format"].to_numpy() == fmt) | anchor]
        pred = predict_loss({k: float(entry[k]) for k in (*PRECISION_PARAMS, "offset") if k in entry},
                            rows["N"], rows["D"], rows["P"])  # fmt: skip
        obs = rows["loss"].to_numpy()
        resid = np.log(obs / pred) if objective.space == "log" else obs - pred
        options = data.get("options") or {}
        k = 6 - bool(options.get("tie_exponents")) + bool(options.get("offset"))
        fits[fmt] = {**entry, "information": information(objective.loss, objective.space, objective.delta,
                                                          resid, k)}  # fmt: skip
    return {**data, "fits": fits}


def section_forms(comparison: FormComparison) -> list[str]:
    """Markdown: per format, the three forms' held-out MAPE and AIC/BIC, and which the data prefer."""
    lines = ["## Law forms compared", ""]
    if comparison.skipped:
        return lines + [f"Not compared: {comparison.skipped}.", ""]
    lines += [
        "Precision: N_eff = N·(1 − e^(−P/γ)); efficiency: N·eff(P), one free eff per P; penalty: Chinchilla "
        "+ C·e^(−P/γ)·D^δ_D·N^(−δ_N); coupled: (A·N_eff^(−α) + B·D^(−β))^k + E.  Same rows and objective; "
        "held-out = fit without the largest N, predict it (MAPE); AIC/BIC from the objective's likelihood "
        "(lower is better, Δ to the best).",
        "",
    ]
    for fmt, rows in comparison.rows.items():
        lines += [f"### Law forms, {fmt}", "", HEADER, "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            mape = "–" if r["heldout_mape"] is None else f"{100 * r['heldout_mape']:.2f} %"
            flags = ", ".join(dict.fromkeys(r["flags"])) or "–"  # one eff_at_bound per P: name it once
            lines.append(
                f"| {_form_label(r)} | {number_cell(r['k'])} | {mape} | {number_cell(r['aic'], 6)} | "
                f"{number_cell(r['delta_aic'], 3)} | "
                f"{number_cell(r['bic'], 6)} | {number_cell(r['delta_bic'], 3)} | {flags} |"
            )
        lines += ["", verdict(rows), ""]
    return lines


def _form_label(row: dict[str, Any]) -> str:
    coupling = row.get("coupling")
    return row["law"] if coupling is None else f"{row['law']} (k = {coupling:.3g})"


def verdict(rows: list[dict[str, Any]]) -> str:
    """Which form the data prefer, and whether the criteria agree; a ΔAIC under 2 is no preference."""
    scored = [r for r in rows if r["aic"] is not None]
    if not scored:
        return "No form has an information criterion here."
    by_aic = min(scored, key=lambda r: r["aic"])
    by_bic = min(scored, key=lambda r: r["bic"] if r["bic"] is not None else float("inf"))
    held = [r for r in rows if r["heldout_mape"] is not None]
    by_held = min(held, key=lambda r: r["heldout_mape"]) if held else None
    runner_up = sorted(r["aic"] for r in scored)[1] - by_aic["aic"] if len(scored) > 1 else float("inf")
    text = f"The data prefer the **{by_aic['law']}** form by AIC"
    close = runner_up < 2
    text += " (ΔAIC < 2 to the next: no real preference)" if close else f" (next ΔAIC {runner_up:.3g})"
    text += "; BIC agrees" if by_bic is by_aic else f"; BIC prefers {by_bic['law']}"
    if by_held is not None:
        same = by_held is by_aic
        text += "; held-out error agrees" if same else f"; held-out error is lowest for {by_held['law']}"
    flagged = list(dict.fromkeys(by_aic["flags"]))
    if flagged:  # the preferred form's own flags, said next to its name, not after another form's
        name = f"**{by_aic['law']}** form"
        text = text.replace(name, f"{name} (flagged: {', '.join(flagged)})", 1)
    return text + "."
