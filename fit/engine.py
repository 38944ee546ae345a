"""From a validated table to the fit.json document: which rows each fit sees, flags, extrapolation, bootstrap.

``--by format``: one fit per quantization format.  Rows of format ``none``/``bf16`` are the shared
high-precision anchor: they join *every* per-format fit and get no fit of their own (without them γ is not
identified, reference/fitting.md §4.3).  ``--shared``: one joint fit of (A, B, E, α, β) with a γ per format;
each format's rows, anchors included, are the same as in its per-format fit, so the joint objective is the sum
of the per-format objectives with the five parameters tied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fit.bootstrap import BootJob, percentile_ci, run_bootstrap
from fit.errors import InputError
from fit.fitting import GAMMA_BOUNDS, fit_law, profile_gamma
from fit.law import predict_loss
from fit.objective import FitData, LawSpec, Objective, log_params, named_params
from fit.table import Table

ANCHOR_FORMATS = ("none", "bf16")
ANCHOR_MIN_P = 8.0  # "high precision": the capacity factor is ≥ 0.93 for any γ ≤ 3 here
EXPONENT_LIMIT, COEFFICIENT_LIMIT = 1.5, 1e10
EXPONENT_FLOOR = 1e-3  # an exponent at its lower bound 0: the variable has no effect on the fitted loss
# E below this share of the lowest observed loss: the irreducible term went to zero, i.e. the data never
# show the loss flattening, and E trades off against A, α, B, β (reference/fitting.md §4.3)
E_FLOOR_SHARE = 0.01


@dataclass(frozen=True)
class FitOptions:
    law: str = "chinchilla"  # chinchilla | precision
    by: str | None = None  # None | "format"
    shared: bool = False  # with --by format: shared A, B, E, α, β and a γ per format
    tie: bool = False
    offset: bool = False
    objective: Objective = field(default_factory=Objective)
    grid: str = "default"
    n_best: int = 8
    bootstrap: int = 0
    seed: int = 0
    workers: int = 2
    progress: bool | None = None
    extrapolate: bool = True
    profile: bool = True  # γ profile (precision law): a 13-point diagnostic curve in fit.json


@dataclass
class Job:
    """One optimisation: ``names`` are the fit.json entries it produces (one per γ group)."""

    names: list[str]
    row_ids: np.ndarray  # index into the table, per data row
    data: FitData
    spec: LawSpec


def _anchor_mask(frame: pd.DataFrame) -> np.ndarray:
    anchor = frame["format"].str.lower().isin(ANCHOR_FORMATS).to_numpy().copy()
    if "P" in frame:
        anchor &= frame["P"].to_numpy() >= ANCHOR_MIN_P
    return anchor


def build_jobs(table: Table, opts: FitOptions) -> list[Job]:
    frame = table.frame
    precision = opts.law == "precision"

    def data_for(rows: np.ndarray, group: np.ndarray | None = None) -> FitData:
        sub = frame.iloc[rows]
        return FitData(sub["N"], sub["D"], sub["loss"], sub["P"] if precision else None, group)

    if opts.by is None:
        rows = np.arange(len(frame))
        return [Job(["all"], rows, data_for(rows), LawSpec(precision, 1, opts.tie, opts.offset))]
    if opts.by != "format":
        raise InputError(f"--by: {opts.by!r} is not allowed; allowed: format")
    anchor = _anchor_mask(frame)
    formats = [f for f in pd.unique(frame["format"][~anchor])]
    if not formats:
        raise InputError(
            "--by format: every row is a high-precision anchor (format none/bf16); nothing to split"
        )
    per_format = [np.flatnonzero((frame["format"].to_numpy() == f) | anchor) for f in formats]
    if opts.shared:
        rows = np.concatenate(per_format)
        group = np.concatenate([np.full(len(r), i) for i, r in enumerate(per_format)])
        spec = LawSpec(precision, len(formats), opts.tie, opts.offset)
        return [Job([str(f) for f in formats], rows, data_for(rows, group), spec)]
    spec = LawSpec(precision, 1, opts.tie, opts.offset)
    return [Job([str(f)], rows, data_for(rows), spec) for f, rows in zip(formats, per_format, strict=True)]


def flags_for(
    params: dict[str, float], data: FitData, rows: np.ndarray, converged: bool, precision: bool
) -> list[str]:
    """Warnings a reader must see; a flagged fit is still written."""
    flags = []
    for name, variable in (("alpha", "N"), ("beta", "D")):
        if params[name] > EXPONENT_LIMIT:
            flags.append(
                f"exponent_gt_1.5: {name}={params[name]:.4g} (likely unidentified; widen the N/D range)"
            )
        elif params[name] < EXPONENT_FLOOR:
            flags.append(
                f"exponent_at_zero: {name}={params[name]:.3g}: in these data loss does not fall with "
                f"{variable}, so the {variable} term (and gamma, if it multiplies N) is not identified"
            )
    for name in ("A", "B"):
        if params[name] > COEFFICIENT_LIMIT:
            flags.append(f"coefficient_gt_1e10: {name}={params[name]:.4g} (likely unidentified)")
    lowest_loss = float(np.min(data.L[rows]))
    if params["E"] < E_FLOOR_SHARE * lowest_loss:
        flags.append(
            f"E_unidentified: E={params['E']:.3g} is ~0 against losses >= {lowest_loss:.3g}; the data do not "
            "show the loss flattening (widen the N/D range); E, A, alpha, B, beta trade off"
        )
    if precision:
        gamma = params["gamma"]
        for bound, side in zip(GAMMA_BOUNDS, ("lower", "upper"), strict=True):
            if abs(np.log(gamma / bound)) < 1e-3:
                flags.append(f"gamma_at_bound: gamma={gamma:.4g} sits at the {side} bound {bound:g}")
        if len(np.unique(data.P[rows])) == 1:
            flags.append(
                f"single_P: every row has P={data.P[rows][0]:g}; gamma is not identified (the law is "
                "Chinchilla's; gamma pinned to its lower bound)"
            )
        if not np.any(data.P[rows] >= ANCHOR_MIN_P):
            flags.append(
                "no_16bit_anchor: no row with P >= 8; gamma is not identified without high-precision runs"
            )
    for name, values in (("N", data.N[rows]), ("D", data.D[rows])):
        distinct = len(np.unique(values))
        if distinct < 3:
            flags.append(f"few_distinct_{name}: only {distinct} distinct {name} values")
    if not converged:
        flags.append("not_converged: the optimiser did not reach a stationary point (see grad_norm, message)")
    return flags


def _extrapolate(job: Job, opts: FitOptions) -> list[dict[str, Any]]:
    """Refit without the largest N (weight 0), from a fresh start grid; score the held-out rows."""
    data = job.data
    held = data.N == data.N.max()
    kept = data.with_weight(np.where(held, 0.0, data.weight))
    if len(np.unique(data.N[~held])) < 3:
        return [{"held_out": "largest N", "mape": None, "reason": "fewer than 3 distinct N remain"}] * len(
            job.names
        )
    result = fit_law(kept, job.spec, opts.objective, opts.grid, opts.n_best)
    out = []
    for group, params in enumerate(named_params(result.theta, job.spec)):
        rows = held & (data.group == group)
        if not rows.any():
            out.append({"held_out": "largest N", "mape": None, "reason": "no rows at the largest N"})
            continue
        pred = predict_loss(params, data.N[rows], data.D[rows], data.P[rows] if job.spec.precision else None)
        ape = np.abs(pred - data.L[rows]) / data.L[rows]
        out.append(
            {
                "held_out": "largest N",
                "N": float(data.N.max()),
                "n_points": int(rows.sum()),
                "mape": float(ape.mean()),
                "max_ape": float(ape.max()),
                "params": params,
            }
        )
    return out


def run_fits(table: Table, opts: FitOptions) -> dict[str, Any]:
    """Fit, flag, extrapolate and bootstrap; returns the ``fits`` and ``extrapolation`` parts of fit.json."""
    precision = opts.law == "precision"
    if opts.shared and opts.by != "format":
        raise InputError("--shared needs --by format (it ties A, B, E, alpha, beta across formats)")
    if opts.shared and not precision:
        raise InputError("--shared needs --law precision (the per-format parameter is gamma)")
    jobs = build_jobs(table, opts)
    frame = table.frame
    runs = frame["run"].to_numpy() if "run" in frame else np.arange(len(frame)).astype(str)
    fits: dict[str, dict[str, Any]] = {}
    results = []
    for job in jobs:
        result = fit_law(job.data, job.spec, opts.objective, opts.grid, opts.n_best)
        results.append(result)
        extrap = _extrapolate(job, opts) if opts.extrapolate else [None] * len(job.names)
        profiles = profile_gamma(result.theta, job.data, job.spec, opts.objective) if opts.profile else []
        for group, (name, params) in enumerate(
            zip(job.names, named_params(result.theta, job.spec), strict=True)
        ):
            rows = job.data.group == group
            entry: dict[str, Any] = dict(params)
            entry.update(
                objective=result.objective,
                n_points=int(rows.sum()),
                n_runs=int(len(np.unique(runs[job.row_ids[rows]]))),
                converged=result.converged,
                grad_norm=result.grad_norm,
                iterations=result.iterations,
                message=result.message,
                n_starts_screened=result.n_starts_screened,
                n_starts_optimised=result.n_starts_optimised,
                log_params=log_params(result.theta, job.spec),
                flags=flags_for(params, job.data, rows, result.converged, precision),
            )
            if precision:  # recommend refuses bit widths outside what the fit saw
                entry["P_range"] = [float(job.data.P[rows].min()), float(job.data.P[rows].max())]
            if profiles:
                entry["gamma_profile"] = profiles[group]
            if job.spec.n_gamma > 1 and precision:
                entry["shared"] = True  # objective is the joint one
            if extrap[group] is not None:
                entry["extrapolation"] = extrap[group]
            fits[name] = entry
    if opts.bootstrap > 0:
        _attach_bootstrap(jobs, results, fits, runs, opts)
    return {"fits": fits, "extrapolation": _pooled_extrapolation(fits)}


def _attach_bootstrap(jobs: list[Job], results: list, fits: dict, runs: np.ndarray, opts: FitOptions) -> None:
    _, unit_of_row = np.unique(runs, return_inverse=True)
    boot_jobs = [
        BootJob(j.data, j.spec, opts.objective, r.theta, j.row_ids)
        for j, r in zip(jobs, results, strict=True)
    ]
    draws = run_bootstrap(boot_jobs, unit_of_row, opts.bootstrap, opts.seed, opts.workers, opts.progress)
    for job, thetas in zip(jobs, draws, strict=True):
        per_draw = [named_params(theta, job.spec) for theta in thetas]  # K × groups × params
        for group, name in enumerate(job.names):
            keys = list(per_draw[0][group])
            samples = {k: [d[group][k] for d in per_draw] for k in keys}
            fits[name]["bootstrap"] = {k: list(percentile_ci(np.asarray(v))) for k, v in samples.items()}
            fits[name]["bootstrap_samples"] = samples
            fits[name]["bootstrap_level"] = 0.95


def _pooled_extrapolation(fits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    scored = [e["extrapolation"] for e in fits.values() if e.get("extrapolation", {}).get("mape") is not None]
    if not scored:
        return {"held_out": "largest N", "mape": None}
    points = sum(s["n_points"] for s in scored)
    mape = sum(s["mape"] * s["n_points"] for s in scored) / points
    return {
        "held_out": "largest N",
        "mape": float(mape),
        "n_points": int(points),
        "per_fit": {
            name: e["extrapolation"]["mape"]
            for name, e in fits.items()
            if e.get("extrapolation", {}).get("mape") is not None
        },
    }
