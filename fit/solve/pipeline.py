"""From a validated table to the fit.json document: which rows each fit sees, flags, extrapolation, bootstrap.

``--by format``: one fit per quantization format.  Rows of format ``none``/``bf16`` are the shared
high-precision anchor: they join *every* per-format fit and get no fit of their own (without them γ is not
identified, docs/method.md §1).  ``--shared``: one joint fit of (A, B, E, α, β) with a γ per format;
each format's rows, anchors included, are the same as in its per-format fit, so the joint objective is the sum
of the per-format objectives with the five parameters tied.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fit.data.table import Table
from fit.errors import InputError
from fit.law import EFF_PREFIX, FULL_P, LAWS, predict_loss
from fit.solve.bootstrap import BootJob, finite_percentile_ci, run_bootstrap
from fit.solve.coupled import CoupledSpec, coupled_flags
from fit.solve.diagnostics import collinear_flag, form_flags, identification_flags, identify, information
from fit.solve.forms import FORMS, FormSpec, assign_slots
from fit.solve.objective import GAMMA_BOUNDS, FitData, LawSpec, Objective
from fit.solve.optimize import profile_gamma
from fit.solve.resampling import ANCHOR_MIN_P, anchor_mask, bootstrap_strata, bootstrap_units
from fit.solve.seeds import seed_spread
from fit.solve.staged import Spec, fit_any, log_params_of, params_of

EXPONENT_LIMIT, COEFFICIENT_LIMIT = 1.5, 1e10
EXPONENT_FLOOR = 1e-3  # an exponent at its lower bound 0: the variable has no effect on the fitted loss
# E below this share of the lowest observed loss: the irreducible term went to zero, i.e. the data never
# show the loss flattening, and E trades off against A, α, B, β (docs/method.md §6, flags)
E_FLOOR_SHARE = 0.01


@dataclass(frozen=True)
class FitOptions:
    law: str = "chinchilla"  # chinchilla | precision | efficiency | penalty
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
    two_stage: bool = False  # Chinchilla on the 16-bit anchors first, then the precision terms with it frozen
    # bootstrap within each design point (format, P): bootstrap_strata below
    stratify: bool = True


@dataclass
class Job:
    """One optimisation: ``names`` are the fit.json entries it produces (one per γ group)."""

    names: list[str]
    row_ids: np.ndarray  # index into the table, per data row
    data: FitData
    spec: Spec


def _job(names: list[str], rows: np.ndarray, frame: pd.DataFrame, opts: FitOptions, group=None) -> Job:
    """The rows of one optimisation and its parameter layout (efficiency slots depend on the rows' P)."""
    sub = frame.iloc[rows]
    uses_p = opts.law != "chinchilla"
    if opts.law == "coupled":  # N_eff where every row has a P (`bitlaw fit` validates a P column it finds)
        uses_p = "P" in sub and bool((pd.to_numeric(sub["P"], errors="coerce") > 0).all())
    P = sub["P"].to_numpy(dtype=float) if uses_p else None
    group = np.zeros(len(rows), dtype=int) if group is None else group
    spec: Spec
    if opts.law == "efficiency":
        slot, slots = assign_slots(P, group)
        spec = FormSpec("efficiency", opts.tie, slots, len(names))
    else:
        slot = None
        if opts.law == "penalty":
            quantized = P < FULL_P
            p_bar = float(P[quantized].mean()) if quantized.any() else 0.0
            centre = (p_bar, float(np.log(sub["N"]).mean()), float(np.log(sub["D"]).mean()))
            spec = FormSpec("penalty", opts.tie, (), len(names), centre)
        elif opts.law == "coupled":
            spec = CoupledSpec(uses_p, len(names), opts.tie)
        else:
            spec = LawSpec(opts.law == "precision", len(names), opts.tie, opts.offset)
    return Job(names, rows, FitData(sub["N"], sub["D"], sub["loss"], P, group, None, slot), spec)


def build_jobs(table: Table, opts: FitOptions) -> list[Job]:
    frame = table.frame
    if opts.law not in LAWS:
        raise InputError(f"--law: {opts.law!r} is not allowed; allowed: {', '.join(LAWS)}")
    if opts.offset and opts.law != "precision":
        raise InputError("--offset: only with --law precision (it shifts the exponent of 1 - exp(-P/gamma))")
    if opts.by is None:
        return [_job(["all"], np.arange(len(frame)), frame, opts)]
    if opts.by != "format":
        raise InputError(f"--by: {opts.by!r} is not allowed; allowed: format")
    anchor = anchor_mask(frame)
    formats = [f for f in pd.unique(frame["format"][~anchor])]
    if not formats:
        raise InputError(
            "--by format: every row is a high-precision anchor (format none/bf16); nothing to split"
        )
    per_format = [np.flatnonzero((frame["format"].to_numpy() == f) | anchor) for f in formats]
    if opts.shared:
        rows = np.concatenate(per_format)
        group = np.concatenate([np.full(len(r), i) for i, r in enumerate(per_format)])
        return [_job([str(f) for f in formats], rows, frame, opts, group)]
    return [_job([str(f)], rows, frame, opts) for f, rows in zip(formats, per_format, strict=True)]


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


def _extrapolate(job: Job, opts: FitOptions, runs: np.ndarray) -> list[dict[str, Any]]:
    """Refit without the largest N (weight 0), from a fresh start grid; score the held-out rows.  ``runs``:
    each table row's run (a run has one N, so its rows are held out together; a checkpoint table holds out
    more rows than runs)."""
    data = job.data
    held = data.N == data.N.max()
    kept = data.with_weight(np.where(held, 0.0, data.weight))
    if len(np.unique(data.N[~held])) < 3:
        return [{"held_out": "largest N", "mape": None, "reason": "fewer than 3 distinct N remain"}] * len(
            job.names
        )
    result = fit_any(kept, job.spec, opts.objective, opts.grid, opts.n_best, opts.two_stage)
    out = []
    for group, params in enumerate(params_of(result.theta, job.spec)):
        rows = held & (data.group == group)
        if not rows.any():
            out.append({"held_out": "largest N", "mape": None, "reason": "no rows at the largest N"})
            continue
        pred = predict_loss(params, data.N[rows], data.D[rows], None if data.P is None else data.P[rows])
        ape = np.abs(pred - data.L[rows]) / data.L[rows]
        out.append(
            {
                "held_out": "largest N",
                "N": float(data.N.max()),
                "n_points": int(rows.sum()),
                "n_runs": int(len(np.unique(runs[job.row_ids[rows]]))),
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
    if opts.shared and opts.law == "chinchilla":
        raise InputError("--shared needs --law precision, efficiency or penalty (a per-format parameter)")
    if opts.two_stage and opts.law == "chinchilla":
        raise InputError(
            "--two-stage needs --law precision, efficiency or penalty (chinchilla has no stage 2)"
        )
    jobs = build_jobs(table, opts)
    frame = table.frame
    runs = frame["run"].to_numpy() if "run" in frame else np.arange(len(frame)).astype(str)
    unit_of_row, unit_name = bootstrap_units(frame)  # branches of one trunk are one unit, not several runs
    fits: dict[str, dict[str, Any]] = {}
    results = []
    for number, job in enumerate(jobs, 1):
        say = _stage(opts, f"fit {number}/{len(jobs)} ({', '.join(job.names)}, {len(job.data.L)} rows)")
        say("fitting")
        result = fit_any(job.data, job.spec, opts.objective, opts.grid, opts.n_best, opts.two_stage)
        results.append(result)
        if opts.extrapolate:
            say("refitting without the largest N (extrapolation check)")
        extrap = _extrapolate(job, opts, runs) if opts.extrapolate else [None] * len(job.names)
        profiled = opts.profile and precision and not opts.two_stage  # the profile frees A..beta
        if profiled:
            say("profiling gamma")
        profiles = profile_gamma(result.theta, job.data, job.spec, opts.objective) if profiled else []
        # identification on the objective itself (fit.solve.diagnostics.identify); n: independent units
        n_units = len(np.unique(unit_of_row[job.row_ids[job.data.weight > 0]]))
        verdicts = identify(result.theta, result.objective, job.data, job.spec, opts.objective, n_units,
                            len(job.names), profiles or None)  # fmt: skip
        for group, (name, params) in enumerate(
            zip(job.names, params_of(result.theta, job.spec), strict=True)
        ):
            rows = job.data.group == group
            entry: dict[str, Any] = {k: v for k, v in params.items() if not k.startswith(EFF_PREFIX)}
            if opts.law == "efficiency":
                entry.update(_eff_entries(params))
            entry.update(
                objective=result.objective,
                n_points=int(rows.sum()),
                n_runs=int(len(np.unique(runs[job.row_ids[rows]]))),
                **({"n_trunks": int(len(np.unique(unit_of_row[job.row_ids[rows]])))}
                   if unit_name.startswith("trunk") else {}),
                converged=result.converged,
                grad_norm=result.grad_norm,
                iterations=result.iterations,
                message=result.message,
                n_starts_screened=result.n_starts_screened,
                n_starts_optimised=result.n_starts_optimised,
                log_params=log_params_of(result.theta, job.spec),
                flags=flags_for(params, job.data, rows, result.converged, precision or "gamma" in params
                                and opts.law == "coupled")  # fmt: skip
                + collinear_flag(job.data, rows)
                + (coupled_flags(params) if opts.law == "coupled" else [])
                + (form_flags(opts.law, params, job.data, rows) if opts.law in FORMS else []),
                identification=verdicts[group],
            )
            named = {f.split(":", 1)[0] for f in entry["flags"]}
            entry["flags"] += [f for f in identification_flags(verdicts[group], params)
                               if f.split(":", 1)[0] not in named]  # fmt: skip
            entry["information"] = _information(job, result.theta, opts.objective)
            if opts.two_stage:
                entry["two_stage"] = True  # A, B, E, alpha, beta are the 16-bit anchors' Chinchilla fit
            if job.data.P is not None:  # recommend refuses bit widths outside what the fit saw
                entry["P_range"] = [float(job.data.P[rows].min()), float(job.data.P[rows].max())]
            entry["data_range"] = _data_range(job.data, rows)
            spread = seed_spread(frame.iloc[job.row_ids[rows & (job.data.weight > 0)]])
            if spread:  # repeats of one point: the noise no forecast can beat (fit.solve.seeds)
                entry["seed_spread"] = spread
            if profiles:
                entry["gamma_profile"] = profiles[group]
            if len(job.names) > 1:
                entry["shared"] = True  # objective is the joint one
            if extrap[group] is not None:
                entry["extrapolation"] = extrap[group]
            fits[name] = entry
    if opts.bootstrap > 0:
        _attach_bootstrap(jobs, results, fits, frame, opts)
    return {"fits": fits, "extrapolation": _pooled_extrapolation(fits)}


def _stage(opts: FitOptions, label: str):
    """A ``say(step)`` that prints ``label: step`` on stderr when progress is shown (a terminal, or
    --progress): a 100k-row fit spends minutes before its bootstrap starts, and used to print nothing."""
    show = sys.stderr.isatty() if opts.progress is None else opts.progress

    def say(step: str) -> None:
        if show:
            print(f"{label}: {step}", file=sys.stderr, flush=True)

    return say


def _data_range(data: FitData, rows: np.ndarray) -> dict[str, list[float]]:
    """The fitted rows' N, D (and P) spans: predict and recommend warn on questions far outside them
    without re-reading the data file (which may have moved or changed since the fit)."""
    out = {"N": [float(data.N[rows].min()), float(data.N[rows].max())],
           "D": [float(data.D[rows].min()), float(data.D[rows].max())]}
    ratio = data.D[rows] / data.N[rows]  # forecasts outside it err more (fit.answer.forecast)
    out["D_over_N"] = [float(ratio.min()), float(ratio.max())]
    if data.P is not None:
        out["P"] = [float(data.P[rows].min()), float(data.P[rows].max())]
    return out


def _information(job: Job, theta: np.ndarray, obj: Objective) -> dict[str, Any]:
    """AIC/BIC over the job's rows (a shared fit's are joint: every format's entry repeats them)."""
    data, resid = job.data, np.empty(len(job.data.L))
    for group, params in enumerate(params_of(theta, job.spec)):
        rows = data.group == group
        pred = predict_loss(params, data.N[rows], data.D[rows], None if data.P is None else data.P[rows])
        resid[rows] = np.log(data.L[rows] / pred) if obj.space == "log" else data.L[rows] - pred
    used = data.weight > 0
    return information(obj.loss, obj.space, obj.delta, resid[used], job.spec.n_params)


def _eff_entries(params: dict[str, float]) -> dict[str, Any]:
    """fit.json's ``eff`` {"<P>": eff} and the γ each eff implies on its own, −P/log(1 − eff): one γ fits
    every P only if these agree (QuEST's published effs imply γ from 6.7 at 1 bit to 2.2 at 4 bits)."""
    eff = {k[len(EFF_PREFIX) :]: v for k, v in params.items() if k.startswith(EFF_PREFIX)}
    implied = {p: (-float(p) / float(np.log1p(-v)) if 0 < v < 1 else None) for p, v in eff.items()}
    return {"eff": eff, "gamma_implied": implied}


def _attach_bootstrap(
    jobs: list[Job], results: list, fits: dict, frame: pd.DataFrame, opts: FitOptions
) -> None:
    unit_of_row, unit = bootstrap_units(frame)
    strata, strata_name = bootstrap_strata(frame, unit_of_row) if opts.stratify else (None, None)
    boot_jobs = [
        BootJob(j.data, j.spec, opts.objective, r.theta, j.row_ids, opts.two_stage)
        for j, r in zip(jobs, results, strict=True)
    ]
    draws = run_bootstrap(
        boot_jobs, unit_of_row, opts.bootstrap, opts.seed, opts.workers, opts.progress, strata
    )
    for job, thetas in zip(jobs, draws, strict=True):
        per_draw = [params_of(theta, job.spec) for theta in thetas]  # K × groups × params
        for group, name in enumerate(job.names):
            keys = list(per_draw[0][group])
            samples = {k: [d[group][k] for d in per_draw] for k in keys}
            fits[name]["bootstrap"] = {
                k: list(finite_percentile_ci(np.asarray(v))) for k, v in samples.items()
            }
            if opts.law == "efficiency":
                fits[name]["eff_ci"] = {
                    k[len(EFF_PREFIX) :]: v
                    for k, v in fits[name]["bootstrap"].items()
                    if k.startswith(EFF_PREFIX)
                }
            fits[name]["bootstrap_samples"] = samples
            fits[name]["bootstrap_level"] = 0.95
            fits[name]["bootstrap_unit"] = unit
            fits[name]["bootstrap_strata"] = strata_name
            fits[name]["bootstrap_failed"] = int(np.sum(~np.isfinite(thetas).all(axis=1)))


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
