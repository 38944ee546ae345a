"""A rolling-origin backtest in N: which law forecasts larger models best (docs/method.md, "Backtests").

The table's distinct sizes, smallest first, are s_1 < s_2 < … < s_n.  Origin k fits every law on the rows of
s_1 … s_k, exactly as ``bitlaw fit --law L [--by format]`` would (``fit.solve.pipeline.run_fits``, without the
bootstrap, the γ profile and the leave-largest-out refit, which change no point estimate), and predicts every
row of s_{k+1} … s_n.  k runs from ``min_sizes`` to n − 1.  The split is by size, so the rows of one run (its
checkpoints at several D) are all fitted or all held out; a run whose rows sit at two sizes is refused.

Why 3 sizes at least, for every law: along N each law is a saturating power law, A·N^(−α) + E (γ, the effs,
the penalty and a coupling exponent act through P or D, or reshape the same curve).  E is shared with the D
term, but A and α are fitted from the sizes alone: 2 sizes determine them exactly, leaving nothing to tell a
power law from any other curve through two points, and a coupled law's exponent then runs to its bound
(reference: forecasting.md).  With 3 the N direction has one degree of freedom to spare.  The pipeline's own
leave-largest-out check uses the same minimum.

Errors are relative, (predicted − measured) / measured: negative means the law promised a lower loss than the
run reached.  The law the held-out errors prefer (``preferred``): the lowest mean |error| over every held-out
prediction of every origin, on the predictions all compared laws made; two laws within ``TIE`` of it are
split by the mean |error| at the largest N factor.  AIC on all sizes is reported beside it for contrast.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fit.answer.forecast import evaluate_intervals, model_from_predictions
from fit.data.table import Table
from fit.errors import InputError
from fit.fitfile import FitFile
from fit.law import LAWS
from fit.solve.objective import Objective
from fit.solve.pipeline import FitOptions, build_jobs, run_fits
from fit.solve.workers import forked_pool

MIN_SIZES = 3
SIZE_RTOL = 1e-3  # N values within 0.1 % are one size (Epoch's points read from a figure differ by ~1e-7)
P_FREE_LAWS = ("chinchilla", "coupled")  # fitted without a P column too (coupled: its P-free analogue)
TIE = 1e-4  # mean |relative error| closer than 0.01 percentage points: a tie
PREFERENCE_RULE = (
    "lowest mean |error| over every held-out prediction of every origin (on the predictions all laws made); "
    f"within {100 * TIE:g} percentage points, the lowest mean |error| at the largest N factor"
)


@dataclass(frozen=True)
class BacktestOptions:
    laws: tuple[str, ...] = ("chinchilla",)
    by: str | None = None  # None | "format", as bitlaw fit's --by
    min_sizes: int = MIN_SIZES
    objective: Objective = field(default_factory=Objective)
    grid: str = "default"
    workers: int = 2  # processes fitting (law, origin) pairs in parallel
    # bitlaw fit's own options (tie, offset, two-stage, shared) for its internal backtest; None: the defaults
    fit_options: FitOptions | None = None


@dataclass
class BacktestResult:
    sizes: list[float]  # the smallest N of each distinct size, ascending
    origins: list[dict[str, Any]]  # per origin: k, N_max of the fit, rows, each law's fits (params, flags)
    predictions: pd.DataFrame  # one row per (origin, law, fit, held-out row)
    summary: list[dict[str, Any]]  # per (law, fit)
    preferred: dict[str, dict[str, Any]]  # per fit name and "all"
    skipped: list[dict[str, Any]]  # (origin, law[, fit], reason) that produced no prediction
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-row predictions (backtest.csv holds those), JSON-ready."""
        return _finite({
            "error": "(predicted - measured) / measured", "preference_rule": PREFERENCE_RULE,
            "options": self.options, "sizes": self.sizes, "origins": self.origins, "summary": self.summary,
            "preferred": self.preferred, "skipped": self.skipped, "n_predictions": len(self.predictions),
        })


def default_laws(frame: pd.DataFrame, by: str | None) -> tuple[list[str], str | None]:
    """Every law the table supports and why any was left out: laws that read P need a P column, and several
    quantized formats without --by would pool into one γ (bitlaw fit refuses that too)."""
    if "P" not in frame:
        return list(P_FREE_LAWS), "laws that read P left out: the table has no P column"
    if by is None and len(quantized_formats(frame)) > 1:
        return list(P_FREE_LAWS), "laws that read P left out: several formats; pass --by format"
    return list(LAWS), None


def quantized_formats(frame: pd.DataFrame) -> list[str]:
    return sorted({str(f) for f in frame["format"].dropna()} - {"none", "bf16"}) if "format" in frame else []


def check_laws(laws: list[str], frame: pd.DataFrame, by: str | None) -> None:
    for law in laws:
        if law not in LAWS:
            raise InputError(f"--law: {law!r} is not allowed; allowed: {', '.join(LAWS)}")
        if law in P_FREE_LAWS:
            continue
        if "P" not in frame:
            raise InputError(f"--law {law}: needs a P column (bits per weight); map it: --columns P=COLUMN")
        formats = quantized_formats(frame)
        if by is None and len(formats) > 1:
            raise InputError(f"--by: the table holds formats {', '.join(formats)}; --law {law} without --by "
                             "format would fit one law to all of them; pass --by format (or --where)")


def size_index(N: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Each row's size (0 = smallest) and each size's smallest N: sorted N values a factor ≤ 1 + SIZE_RTOL
    apart are one size."""
    values = np.unique(N)
    starts = np.concatenate([[True], np.diff(np.log(values)) > SIZE_RTOL])
    of_value = np.cumsum(starts) - 1
    return of_value[np.searchsorted(values, N)], [float(v) for v in values[starts]]


def _check_runs_whole(frame: pd.DataFrame, size: np.ndarray) -> None:
    """A run is fitted or held out as a whole: its rows (checkpoints at several D) must share one size."""
    if "run" not in frame:
        return
    spread = pd.Series(size).groupby(frame["run"].astype(str).to_numpy()).nunique()
    if (spread > 1).any():
        run = spread.index[spread.to_numpy() > 1][0]
        values = sorted(frame.loc[frame["run"].astype(str) == run, "N"].unique())
        raise InputError(f"column 'run': run {run!r} has rows at N = {values[0]:g} and {values[-1]:g}; a "
                         "backtest holds out whole runs by size, so each run needs one N")


def backtest(table: Table, opts: BacktestOptions) -> BacktestResult:
    """Fit every law at every origin, predict the larger sizes, summarise (module docstring)."""
    frame = table.frame
    check_laws(list(opts.laws), frame, opts.by)
    if opts.min_sizes < MIN_SIZES:
        raise InputError(f"--min-sizes: {opts.min_sizes} is not allowed; at least {MIN_SIZES} (A, alpha and "
                         "E along N need one size to spare)")
    size, sizes = size_index(frame["N"].to_numpy(dtype=float))
    _check_runs_whole(frame, size)
    if len(sizes) <= opts.min_sizes:
        raise InputError(f"column 'N': {len(sizes)} distinct sizes; a backtest fits on at least "
                         f"{opts.min_sizes} and predicts a larger one: it needs {opts.min_sizes + 1} or more")
    tasks = [(law, k) for law in opts.laws for k in range(opts.min_sizes, len(sizes) + 1)]
    fitted_at = {k: size < k for k in range(opts.min_sizes, len(sizes) + 1)}
    subtables = [dataclasses.replace(table, frame=frame[fitted_at[k]].reset_index(drop=True))
                 for _, k in tasks]
    base = opts.fit_options or FitOptions(by=opts.by, objective=opts.objective, grid=opts.grid)
    fit_opts = {law: dataclasses.replace(base, law=law, extrapolate=False, profile=False, bootstrap=0,
                                         progress=False) for law in opts.laws}
    task_opts = [fit_opts[law] for law, _ in tasks]
    if opts.workers <= 1 or len(tasks) == 1:
        outcomes = [_fit(t, o) for t, o in zip(subtables, task_opts, strict=True)]
    else:
        # forked, as the bootstrap's and plan's refits: numpy/scipy already imported; Ctrl-C terminates the
        # workers instead of waiting for the fits in flight (fit/solve/workers.py)
        with forked_pool(opts.workers) as pool:
            outcomes = pool.starmap(_fit, zip(subtables, task_opts, strict=True))
    origins, parts, skipped = [], [], []
    aic: dict[tuple[str, str], float | None] = {}
    groups = {law: _rows_per_fit(table, fit_opts[law]) for law in opts.laws}
    for (law, k), fits in zip(tasks, outcomes, strict=True):
        if isinstance(fits, str):
            what = "the all-sizes fit (for AIC): " if k == len(sizes) else ""
            skipped.append({"origin": k, "law": law, "reason": what + fits})
            continue
        if k == len(sizes):  # every size: no prediction, only the information criterion
            aic.update({(law, n): (e.get("information") or {}).get("aic") for n, e in fits.items()})
            continue
        fitted = fitted_at[k]
        _origin(origins, k, frame, fitted)["fits"][law] = {n: _fit_record(e) for n, e in fits.items()}
        fitfile = FitFile(Path(f"backtest origin {k}"), {"law": law, "fits": fits})
        for name, rows in groups[law].items():
            held = rows[~fitted[rows]]
            if not len(held):
                continue
            if name not in fits:
                skipped.append({"origin": k, "law": law, "fit": name,
                                "reason": f"no fit for {name!r} on the smallest {k} sizes"})
                continue
            try:
                part = _predict(fitfile, name, frame, held, rows[fitted[rows]], k, law)
                parts.append(part.assign(size=size[held]))
            except InputError as err:
                skipped.append({"origin": k, "law": law, "fit": name, "reason": str(err)})
    predictions = pd.concat(parts, ignore_index=True) if parts else _empty_predictions()
    summary = [_summarise(law, name, p, aic.get((law, name)))
               for (law, name), p in predictions.groupby(["law", "fit"], sort=False)]
    options = {"laws": list(opts.laws), "by": opts.by, "min_sizes": opts.min_sizes, "grid": opts.grid,
               "loss": opts.objective.loss, "delta": opts.objective.delta, "space": opts.objective.space,
               "size_rtol": SIZE_RTOL}
    return BacktestResult(sizes, sorted(origins, key=lambda o: o["k"]), predictions, summary,
                          preferences(predictions, aic), skipped, options)


def error_models(result: BacktestResult, law: str) -> dict[str, dict[str, Any]]:
    """Per fit name, the error model of ``bitlaw fit``'s own table from its backtest (every origin)."""
    p = result.predictions[result.predictions["law"] == law]
    n, low = len(result.sizes), result.options["min_sizes"]
    basis = (f"backtest of this table: {n} sizes, {len(result.origins)} origin(s) fitting "
             f"{low}{'' if low == n - 1 else f'..{n - 1}'} sizes")
    return {str(name): model_from_predictions(g, basis) for name, g in p.groupby("fit")}


def _fit(table: Table, opts: FitOptions) -> dict[str, Any] | str:
    """One origin's fit.json ``fits``, as ``bitlaw fit`` computes them; the one-line reason if refused."""
    try:
        return run_fits(table, opts)["fits"]
    except InputError as err:
        return str(err)


def _rows_per_fit(table: Table, opts: FitOptions) -> dict[str, np.ndarray]:
    """{fit name: the table rows it covers}, by the pipeline's own split (a format's rows and the anchors)."""
    out = {}
    for job in build_jobs(table, opts):
        for group, name in enumerate(job.names):
            out[name] = job.row_ids[job.data.group == group]
    return out


def _origin(origins: list[dict[str, Any]], k: int, frame: pd.DataFrame, fitted: np.ndarray) -> dict[str, Any]:
    for record in origins:
        if record["k"] == k:
            return record
    record = {"k": k, "N_max": float(frame["N"][fitted].max()), "rows_fitted": int(fitted.sum()),
              "rows_held_out": int((~fitted).sum()), "fits": {}}
    origins.append(record)
    return record


def _fit_record(entry: dict[str, Any]) -> dict[str, Any]:
    skip = {"information", "log_params", "data_range", "message", "flags", "gamma_implied"}
    params = {k: v for k, v in entry.items() if isinstance(v, int | float | dict) and k not in skip}
    return {**params, "flags": [f.split(":")[0] for f in entry.get("flags", [])]}


def _predict(fitfile: FitFile, name: str, frame: pd.DataFrame, held: np.ndarray, fitted_rows: np.ndarray,
             k: int, law: str) -> pd.DataFrame:
    sub = frame.iloc[held]
    N, D, loss = (sub[c].to_numpy(dtype=float) for c in ("N", "D", "loss"))
    # the coupled form reads P where it was fitted with γ (a table with a P column), its analogue does not
    reads_p = law not in P_FREE_LAWS or (law == "coupled" and "gamma" in fitfile.entry(name))
    P = sub["P"].to_numpy(dtype=float) if "P" in sub and reads_p else None
    predicted = np.asarray(fitfile.predict(N, D, P, fmt=name), dtype=float)
    fit_n = frame["N"].to_numpy(dtype=float)[fitted_rows]
    fit_ratio = frame["D"].to_numpy(dtype=float)[fitted_rows] / fit_n
    ratio = D / N
    out = pd.DataFrame({
        "origin": k, "N_max_fit": float(fit_n.max()), "law": law, "fit": name,
        "run": sub["run"].astype(str).to_numpy() if "run" in sub else (held + 1).astype(str),
        "row": held, "format": sub["format"].astype(str).to_numpy() if "format" in sub else "",
        "N": N, "D": D, "loss": loss, "predicted": predicted,
        "error": (predicted - loss) / loss, "error_nats": predicted - loss,
        "N_factor": N / fit_n.max(), "D_over_N": ratio,
        "D_over_N_in_range": (ratio >= fit_ratio.min() * (1 - 1e-9))
        & (ratio <= fit_ratio.max() * (1 + 1e-9)),
        "D_over_N_min_fit": float(fit_ratio.min()), "D_over_N_max_fit": float(fit_ratio.max()),
    })
    if "P" in sub:
        out.insert(out.columns.get_loc("N"), "P", sub["P"].to_numpy())
    out["abs_error"] = out["error"].abs()
    return out


def _empty_predictions() -> pd.DataFrame:
    return pd.DataFrame(columns=["origin", "N_max_fit", "law", "fit", "run", "row", "format", "N", "D",
                                 "loss", "predicted", "error", "error_nats", "N_factor", "D_over_N",
                                 "D_over_N_in_range", "D_over_N_min_fit", "D_over_N_max_fit",
                                 "abs_error", "size"])


def _errors(p: pd.DataFrame) -> dict[str, Any]:
    return {"n": len(p), "mean_error": float(p["error"].mean()),
            "mean_abs_error": float(p["abs_error"].mean()), "max_abs_error": float(p["abs_error"].max())}


def corner(p: pd.DataFrame) -> dict[str, Any]:
    """The held-out rows at the largest N, at its smallest D/N: where forecasts miss most (forecasting.md)."""
    top = p[p["N"] >= p["N"].max() / (1 + SIZE_RTOL)]
    rows = top[top["D_over_N"] <= top["D_over_N"].min() * (1 + 1e-9)]
    worst = rows.loc[rows["abs_error"].idxmax()]
    return {"origin": int(rows["origin"].iloc[0]), "N": float(rows["N"].max()),
            "D_over_N": float(rows["D_over_N"].min()), "N_factor": float(rows["N_factor"].max()),
            "n": len(rows), "mean_error": float(rows["error"].mean()), "worst_error": float(worst["error"]),
            "worst_run": str(worst["run"])}


def _summarise(law: str, name: str, p: pd.DataFrame, aic: float | None) -> dict[str, Any]:
    """One (law, fit)'s errors: overall, per origin, per (origin, held-out size), inside/outside the fitted
    D/N range, at the largest factor, and the corner of the origin that extrapolates furthest."""
    first = p[p["origin"] == p["origin"].min()]
    largest = p[p["N_factor"] >= p["N_factor"].max() / (1 + SIZE_RTOL)]
    by_factor = []
    for (k, _), g in p.groupby(["origin", pd.Series(size_index(p["N"].to_numpy())[0], index=p.index)]):
        by_factor.append({"origin": int(k), "N": float(g["N"].min()), "N_factor": float(g["N_factor"].min()),
                          **_errors(g)})
    log_factor = np.log2(p["N_factor"].to_numpy())
    slope = float(np.polyfit(log_factor, p["abs_error"], 1)[0]) if np.ptp(log_factor) > 0 else None
    return {
        "law": law, "fit": name, "origins": int(p["origin"].nunique()), **_errors(p),
        "largest_factor": {"N_factor": float(largest["N_factor"].max()), **_errors(largest)},
        "corner": corner(first),
        "abs_error_per_doubling": slope,  # least-squares slope of |error| on log2(N factor)
        "D_over_N_range": {
            side: (_errors(g) if len(g) else None)
            for side, g in (("inside", p[p["D_over_N_in_range"]]), ("outside", p[~p["D_over_N_in_range"]]))
        },
        "per_origin": [{"origin": int(k), "N_max_fit": float(g["N_max_fit"].iloc[0]),
                        "N_factor": [float(g["N_factor"].min()), float(g["N_factor"].max())],
                        **_errors(g), "corner": corner(g)} for k, g in p.groupby("origin")],
        "by_factor": by_factor, "aic": aic,
        # the intervals each origin's fit would state (fit.answer.forecast), against its held-out runs
        "forecast_interval": evaluate_intervals(p),
        # the signed alternative, centred on a bias line (method.md §14): scored for comparison, not stated
        "forecast_interval_bias_centred": evaluate_intervals(p, centred=True),
    }


def preferences(predictions: pd.DataFrame, aic: dict[tuple[str, str], float | None]) -> dict[str, dict]:
    """Per fit name and over all of them ("all"): the law the held-out errors prefer (PREFERENCE_RULE), and
    the one AIC on every size prefers, for contrast."""
    names = [str(n) for n in pd.unique(predictions["fit"])]
    out = {name: _prefer(predictions[predictions["fit"] == name],
                         {law: v for (law, n), v in aic.items() if n == name}) for name in names}
    if len(names) > 1:  # AIC is per fit's rows: no pooled one
        out["all"] = _prefer(predictions, {})
    return out


def _prefer(p: pd.DataFrame, aic: dict[str, float | None]) -> dict[str, Any]:
    laws = list(pd.unique(p["law"]))
    key = ["origin", "fit", "row"]
    common = p.groupby(key)["law"].transform("nunique") == len(laws)
    p = p[common]
    if p.empty:
        return {"law": None, "reason": "the laws share no held-out prediction", "laws": laws}
    mean_abs = p.groupby("law")["abs_error"].mean()
    far = p[p["N_factor"] >= p["N_factor"].max() / (1 + SIZE_RTOL)].groupby("law")["abs_error"].mean()
    ranked = sorted(laws, key=lambda law: (mean_abs[law], far[law]))
    tie = len(ranked) > 1 and mean_abs[ranked[1]] - mean_abs[ranked[0]] < TIE
    if tie:
        close = [law for law in ranked if mean_abs[law] - mean_abs[ranked[0]] < TIE]
        ranked = sorted(close, key=lambda law: far[law]) + [law for law in ranked if law not in close]
    scored_aic = {law: v for law, v in aic.items() if v is not None and math.isfinite(v)}
    return {
        "law": ranked[0], "ranking": ranked, "tie_broken_by_largest_factor": bool(tie),
        "n_common": int(len(p) / len(laws)),
        "mean_abs_error": {law: float(mean_abs[law]) for law in ranked},
        "largest_factor_abs_error": {law: float(far[law]) for law in ranked},
        "aic": aic or None,
        "aic_prefers": min(scored_aic, key=scored_aic.__getitem__) if scored_aic else None,
    }


def _finite(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively: strict JSON."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

