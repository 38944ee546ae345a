"""One entry point for every law form: joint fits, the two-stage fit, and warm refits for the bootstrap.

Two-stage (``--two-stage``, Quartet's approach): stage 1 fits Chinchilla on the 16-bit anchor rows (P ≥ 16);
stage 2 fits only the precision parameters (γ, the effs, or the penalty term) with A, B, E, α, β frozen
(pinned by equal bounds, so the same optimiser and convergence test serve both stages).  The joint
efficiency and penalty fits start from those two stages and, in case the anchors mislead, from a Chinchilla
fit of all rows; their own start grid would multiply Epoch's 4500 starts by a grid per slot.

The coupled form (fit.solve.coupled) starts from the additive law's global fit (the precision law's, or
Chinchilla's without P) at k = 1, where the two are the same law, and from that optimum mapped to a few other
k; its two-stage fit's stage 1 is the P-free coupled law on the anchors (A, B, E, α, β and k), stage 2 γ.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from fit.errors import InputError
from fit.law import FULL_P
from fit.solve import coupled, forms
from fit.solve.coupled import CoupledSpec
from fit.solve.forms import FormSpec
from fit.solve.objective import FitData, LawSpec, Objective, objective_and_grad
from fit.solve.objective import log_params as law_log_params
from fit.solve.objective import named_params as law_named_params
from fit.solve.optimize import BLAS_LIMIT, FitResult, canonical, fit_law, local_fit, polish, refit
from fit.solve.optimize import bounds as law_bounds

Spec = LawSpec | FormSpec | CoupledSpec
MIN_DISTINCT = 3  # stage 1 is a Chinchilla fit: it needs 3 distinct N and D (as fit.data.table requires)
GAMMA_STARTS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def n_base(spec: Spec) -> int:
    return 4 + (not spec.tie)


def spec_bounds(spec: Spec, data: FitData) -> list[tuple[float | None, float | None]]:
    if isinstance(spec, CoupledSpec):
        return coupled.bounds(spec)
    if isinstance(spec, FormSpec):
        return forms.bounds(spec)
    return law_bounds(spec, float(np.min(data.P)) if spec.precision else None)


def params_of(theta: np.ndarray, spec: Spec) -> list[dict[str, float]]:
    """θ -> one fit.law parameter mapping per group, whatever the form."""
    if isinstance(spec, CoupledSpec):
        return coupled.named_params(theta, spec)
    if isinstance(spec, FormSpec):
        return forms.named_params(theta, spec)
    return law_named_params(theta, spec)


def log_params_of(theta: np.ndarray, spec: Spec) -> dict[str, float]:
    if isinstance(spec, CoupledSpec):
        return coupled.log_params(theta, spec)
    if isinstance(spec, FormSpec):
        return forms.log_params(theta, spec)
    return law_log_params(theta, spec)


def anchor_data(data: FitData) -> FitData | None:
    """The (weighted) rows at P ≥ 16 as a Chinchilla FitData, or None when they cannot fit Chinchilla."""
    if data.P is None:
        return None
    weight = data.weight * (data.P >= FULL_P)
    used = weight > 0
    if min(len(np.unique(data.N[used])), len(np.unique(data.D[used]))) < MIN_DISTINCT:
        return None
    return FitData(data.N, data.D, data.L, None, None, weight)


def _pinned(box: list, base: np.ndarray) -> list:
    out = list(box)
    for i, value in enumerate(base):
        out[i] = (float(value), float(value))
    return out


def _extras(base: np.ndarray, data: FitData, spec: Spec, obj: Objective, box: list) -> np.ndarray:
    """A full θ from a Chinchilla prefix, the other parameters screened with the prefix held."""
    if isinstance(spec, FormSpec):
        return forms.screen_extras(base, data, spec, obj)
    theta = np.r_[base, np.zeros(spec.n_gamma), [min(0.0, box[-1][1])] if spec.offset else []]
    g0 = n_base(spec)
    for k in range(spec.n_gamma):
        # with the prefix held, each group's γ only moves its own rows' loss: screen it on them alone
        rows = data.with_weight(data.weight * (data.group == k))
        values = []
        for gamma in GAMMA_STARTS:
            trial = theta.copy()
            trial[g0 + k] = np.log(gamma)
            values.append(objective_and_grad(trial, rows, spec, obj)[0])
        theta[g0 + k] = np.log(GAMMA_STARTS[int(np.nanargmin(values))])
    return theta


def fit_any(
    data: FitData, spec: Spec, obj: Objective, grid: str = "default", n_best: int = 8, two_stage: bool = False
) -> FitResult:
    """The global fit of any law form; ``two_stage`` freezes the stage-1 Chinchilla prefix."""
    if isinstance(spec, CoupledSpec):
        with threadpool_limits(**BLAS_LIMIT):
            return _fit_coupled(data, spec, obj, grid, n_best, two_stage)
    if isinstance(spec, LawSpec) and not (two_stage and spec.precision):
        if two_stage:
            raise InputError(
                "--two-stage: needs --law precision, efficiency or penalty (chinchilla has no stage 2)"
            )
        return fit_law(data, spec, obj, grid, n_best)
    with threadpool_limits(**BLAS_LIMIT):
        return _fit_staged(data, spec, obj, grid, n_best, two_stage)


def _fit_staged(
    data: FitData, spec: Spec, obj: Objective, grid: str, n_best: int, two_stage: bool
) -> FitResult:
    box = spec_bounds(spec, data)
    chinchilla = LawSpec(tie=spec.tie)
    anchors = anchor_data(data)
    bases, screened = [], 0
    if anchors is not None:
        stage1 = fit_law(anchors, chinchilla, obj, grid, n_best)
        bases.append(stage1.theta)
        screened += stage1.n_starts_screened
    elif two_stage:
        used = (data.weight > 0) & (data.P >= FULL_P)
        n_n, n_d = len(np.unique(data.N[used])), len(np.unique(data.D[used]))
        raise InputError(
            f"--two-stage: stage 1 needs 16-bit anchor rows (P >= {FULL_P:g}) at >= {MIN_DISTINCT} "
            f"distinct N and D; these rows have {n_n} N and {n_d} D"
        )
    if not two_stage:
        everything = fit_law(
            FitData(data.N, data.D, data.L, weight=data.weight), chinchilla, obj, grid, n_best
        )
        bases.append(everything.theta)
        screened += everything.n_starts_screened
    best = None
    for base in bases:
        theta0 = _extras(base, data, spec, obj, box)
        frozen = local_fit(theta0, data, spec, obj, _pinned(box, base))
        result = polish(frozen.x, data, spec, obj, _pinned(box, base) if two_stage else box)
        result.iterations += int(frozen.nit)
        if best is None or result.objective < best.objective:
            best = result
    if isinstance(spec, LawSpec):
        best.theta = canonical(best.theta, data, spec)
    best.n_starts_screened, best.n_starts_optimised = screened, len(bases)
    return best


def _fit_coupled(
    data: FitData, spec: CoupledSpec, obj: Objective, grid: str, n_best: int, two_stage: bool
) -> FitResult:
    used = data.weight > 0
    sizes = len(np.unique(data.N[used]))
    if sizes < coupled.MIN_SIZES:
        raise InputError(
            f"--law coupled: needs >= {coupled.MIN_SIZES} distinct N (model sizes) to tell k from the "
            f"exponents; these rows have {sizes}"
        )
    if not spec.precision and spec.n_gamma > 1:
        raise InputError("--shared: --law coupled needs a P column (gamma is its per-format parameter)")
    box = coupled.bounds(spec)
    if two_stage:
        if not spec.precision:
            raise InputError("--two-stage: --law coupled needs a P column (stage 2 fits gamma)")
        anchors = anchor_data(data)
        if anchors is None:
            anchor = used & (data.P >= FULL_P)
            n_n, n_d = len(np.unique(data.N[anchor])), len(np.unique(data.D[anchor]))
            raise InputError(
                f"--two-stage: stage 1 needs 16-bit anchor rows (P >= {FULL_P:g}) at >= {MIN_DISTINCT} "
                f"distinct N and D; these rows have {n_n} N and {n_d} D"
            )
        stage1 = _fit_coupled(anchors, CoupledSpec(False, tie=spec.tie), obj, grid, n_best, False)
        prefix = stage1.theta
        theta0 = np.r_[prefix, np.zeros(spec.n_gamma)]
        for k in range(spec.n_gamma):  # each group's γ screened on its own rows, the prefix held
            rows = data.with_weight(data.weight * (data.group == k))
            values = []
            for gamma in GAMMA_STARTS:
                theta0[len(prefix) + k] = np.log(gamma)
                values.append(coupled.objective_and_grad(theta0, rows, spec, obj)[0])
            theta0[len(prefix) + k] = np.log(GAMMA_STARTS[int(np.nanargmin(values))])
        result = polish(theta0, data, spec, obj, _pinned(box, prefix))
        result.n_starts_screened, result.n_starts_optimised = stage1.n_starts_screened, 1
    else:
        additive_spec = LawSpec(spec.precision, spec.n_gamma, spec.tie)
        additive = fit_law(data if spec.precision else FitData(data.N, data.D, data.L, weight=data.weight),
                           additive_spec, obj, grid, n_best)  # fmt: skip
        starts = coupled.starts_from_additive(additive.theta, spec)
        runs = [local_fit(x0, data, spec, obj, box) for x0 in starts]
        finite = [r for r in runs if np.isfinite(r.fun)] or runs
        best = min(finite, key=lambda r: r.fun)
        result = polish(best.x, data, spec, obj, box)
        result.iterations += int(best.nit)
        result.n_starts_screened = additive.n_starts_screened
        result.n_starts_optimised = additive.n_starts_optimised + len(runs)
    result.theta = coupled.canonical(result.theta, data, spec)
    return result


def _refit_coupled(theta0: np.ndarray, data: FitData, spec: CoupledSpec, obj: Objective, two_stage: bool):
    box = coupled.bounds(spec)
    theta = np.array(theta0, dtype=float)
    if two_stage:
        anchors = anchor_data(data)
        if anchors is None:
            return np.full(len(theta), np.nan)
        head = spec.k_col + 1
        theta[:head] = _refit_coupled(theta[:head], anchors, CoupledSpec(False, tie=spec.tie), obj, False)
        box = _pinned(box, theta[:head])
    # the form's refit rule (ftol=1e-12, as the efficiency and penalty refits below): the bootstrap's spread
    # dwarfs what ftol=0's extra iterations would move
    res = local_fit(theta, data, spec, obj, box, ftol=1e-12, gtol=1e-9)
    again = local_fit(res.x, data, spec, obj, box, ftol=1e-12, gtol=1e-9)
    return coupled.canonical(again.x if again.fun <= res.fun else res.x, data, spec)


def refit_any(
    theta0: np.ndarray, data: FitData, spec: Spec, obj: Objective, two_stage: bool = False
) -> np.ndarray:
    """Warm-started refit of a resample; a two-stage fit redoes stage 1 on the resampled anchors first.

    A resample that leaves stage 1 too few anchors gives a NaN draw (finite_percentile_ci skips those)."""
    if isinstance(spec, CoupledSpec):
        return _refit_coupled(theta0, data, spec, obj, two_stage)
    if isinstance(spec, LawSpec) and not two_stage:
        return refit(theta0, data, spec, obj)
    box = spec_bounds(spec, data)
    theta = np.array(theta0, dtype=float)
    if two_stage:
        anchors = anchor_data(data)
        if anchors is None:
            return np.full(len(theta), np.nan)
        nb = n_base(spec)
        theta[:nb] = refit(theta[:nb], anchors, LawSpec(tie=spec.tie), obj)
        box = _pinned(box, theta[:nb])
    # ftol=0 (the full fit's rule) took ~700 L-BFGS-B iterations, 2 s, per penalty-law refit on a 200-row
    # table; ftol=1e-12 stops 15x sooner and moved each parameter by < 1/10 of its bootstrap spread (measured)
    tol = {"ftol": 1e-12, "gtol": 1e-9} if isinstance(spec, FormSpec) else {}
    res = local_fit(theta, data, spec, obj, box, **tol)
    again = local_fit(res.x, data, spec, obj, box, **tol)
    best = again.x if again.fun <= res.fun else res.x
    return canonical(best, data, spec) if isinstance(spec, LawSpec) else best
