"""Fitting one scaling law: start-grid screening, L-BFGS-B with tight tolerances, polish, warm refits.

The objective and its gradient are in ``fit.solve.objective``.  Why each choice is made is in docs/method.md
§6;
the short version: summed loss + ftol=0 + gtol=1e-10, because scipy's default stopping rule is absolute
and fires at objective sizes of 1e-3; a vectorised screen of Epoch's 4500-start grid instead of 4500
optimisations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from fit.solve.lbfgsb import minimize_lbfgsb
from fit.solve.objective import (
    EXPONENT_BOUNDS,
    GAMMA_BOUNDS,
    FitData,
    LawSpec,
    Objective,
    log_terms,
    objective_and_grad,
    objective_batch,
)

GRIDS = ("coarse", "default", "fine")
# Every matrix here is tiny (≤ 20×20 inside L-BFGS-B, vectors of a few hundred rows), so BLAS threads only
# spin-wait: on a loaded 2-core machine 8 L-BFGS-B runs took 10 s instead of 0.16 s, and one warm-started
# refit 100-300 ms instead of 21 ms (measured; docs/method.md §6).  Fits run under threadpool_limits(1).
BLAS_LIMIT = {"limits": 1, "user_api": "blas"}
SCREEN_CHUNK = 4096  # starts evaluated per vectorised block, at most
# ...and at most this many (start, row) cells per block: objective_batch holds ~8 (starts, rows) arrays, so
# 2^21 cells keep a block near 130 MB whatever the table's size.  A fixed 4096 starts on a 55k-row fit made
# 1.8 GB arrays and a 100k-row table peaked at 14.7 GB (issue 28 item 8); below 512 rows nothing changes.
SCREEN_CELLS = 2**21


@dataclass
class FitResult:
    theta: np.ndarray
    objective: float
    grad_norm: float  # ‖projected gradient‖∞ at theta
    iterations: int  # L-BFGS-B iterations summed over the winning start and its polish rounds
    converged: bool
    message: str
    n_starts_screened: int = 0
    n_starts_optimised: int = 0


def bounds(spec: LawSpec, min_p: float | None = None) -> list[tuple[float | None, float | None]]:
    out: list[tuple[float | None, float | None]] = [(None, None)] * 3 + [EXPONENT_BOUNDS]
    if not spec.tie:
        out.append(EXPONENT_BOUNDS)
    if spec.precision:
        out += [(float(np.log(GAMMA_BOUNDS[0])), float(np.log(GAMMA_BOUNDS[1])))] * spec.n_gamma
        if spec.offset:
            # p0 below the smallest P keeps 1 − exp(−(P − p0)/γ) > 0 on every row
            out.append((-16.0, (min_p if min_p is not None else 1.0) - 0.05))
    return out


def start_grid(spec: LawSpec, grid: str = "default") -> np.ndarray:
    """Epoch AI's start grid (4500 points for the default) × a γ grid: an (S, k) array."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}")
    exps, es, coefs, gammas = {
        "coarse": ([0.25, 0.75, 1.25], [-1.0, 0.0, 1.0], [0.0, 10.0, 20.0], [2.0, 8.0]),
        "default": (
            np.arange(0, 2.01, 0.5),
            np.arange(-1, 1.01, 0.5),
            np.arange(0, 25.1, 5),
            [1, 2, 4, 8, 16],
        ),
        "fine": (
            np.arange(0, 2.01, 0.25),
            np.arange(-1, 1.01, 0.25),
            np.arange(0, 25.1, 2.5),
            [0.5, 1, 2, 3, 4, 6, 8, 12, 16, 32],
        ),
    }[grid]
    axes = [coefs, coefs, es, exps] + ([] if spec.tie else [exps])
    if spec.precision:
        # one γ value for all groups at a start: the per-group γ separate during optimisation
        axes.append(np.log(gammas))
        if spec.offset:
            axes.append([0.0])
    points = np.array(list(itertools.product(*axes)), dtype=float)
    if spec.precision and spec.n_gamma > 1:
        g_col = 4 + (not spec.tie)
        points = np.insert(points, [g_col + 1] * (spec.n_gamma - 1), points[:, [g_col]], axis=1)
    return points


def screen(starts: np.ndarray, data: FitData, spec: LawSpec, obj: Objective, keep: int) -> np.ndarray:
    """The ``keep`` starts with the lowest objective, evaluated vectorised in chunks."""
    values = np.empty(len(starts))
    if spec.precision:
        # the grid repeats a handful of (γ, p0) values: compute log N_eff once for each
        law_cols = slice(4 + (not spec.tie), None)
        keys, which = np.unique(starts[:, law_cols], axis=0, return_inverse=True)
        groups = [(np.flatnonzero(which.ravel() == k), keys[k]) for k in range(len(keys))]
    else:
        groups = [(np.arange(len(starts)), None)]
    block = max(1, min(SCREEN_CHUNK, SCREEN_CELLS // max(len(data.L), 1)))
    for idx, key in groups:
        log_n = None if key is None else log_terms(starts[idx[:1]], data, spec)[3][0]
        for i in range(0, len(idx), block):
            chunk = idx[i : i + block]
            values[chunk] = objective_batch(starts[chunk], data, spec, obj, log_n)
    order = np.argsort(values, kind="stable")
    return starts[_diverse(starts[order], spec, keep, order)]


def _diverse(ranked: np.ndarray, spec: LawSpec, keep: int, order: np.ndarray) -> np.ndarray:
    """Indices (into the unsorted starts) of ``keep`` starts: the best start of each exponent cell (α, β)
    first, best cells first, then the next best overall.

    Why: ranking by the start's objective alone put 8 near-identical starts at the top of the default grid
    on a demo-sized table (a = 0, α = 2: the N term is ~0 on every row), all of which L-BFGS-B leaves in the
    same degenerate basin (objective 0.0035, where the coarse grid's first start reached 0.00016).  One start
    per cell spreads the optimised starts over the exponents, where the basins differ."""
    cols = [3] if spec.tie else [3, 4]
    _, first = np.unique(ranked[:, cols], axis=0, return_index=True)  # best-ranked start of each cell
    picked = list(np.sort(first)[:keep])
    taken = set(picked)
    rest = [i for i in range(min(len(ranked), 2 * keep)) if i not in taken][: max(0, keep - len(picked))]
    return order[np.sort(np.array(picked + rest, dtype=int))]


def _projected_grad_norm(theta: np.ndarray, grad: np.ndarray, box: list) -> float:
    g = grad.copy()
    for i, (lo, hi) in enumerate(box):
        if lo is not None and theta[i] <= lo + 1e-12 and g[i] > 0:
            g[i] = 0.0
        if hi is not None and theta[i] >= hi - 1e-12 and g[i] < 0:
            g[i] = 0.0
    return float(np.max(np.abs(g))) if len(g) else 0.0


def objective_fn(spec):
    """The objective of a law shape: fit.solve.objective's, or the one a fit.solve.forms.FormSpec names."""
    return getattr(spec, "objective_fn", objective_and_grad)


def local_fit(
    theta0: np.ndarray,
    data: FitData,
    spec: LawSpec,
    obj: Objective,
    box: list,
    gtol: float = 1e-10,
    maxiter: int = 10_000,
    ftol: float = 0.0,
):
    """One L-BFGS-B run with tight tolerances (ftol=0: stop only when no decrease is possible)."""
    theta0 = np.clip(
        theta0,
        [lo if lo is not None else -np.inf for lo, _ in box],
        [hi if hi is not None else np.inf for _, hi in box],
    )
    if any(lo is not None and lo == hi for lo, hi in box):
        # minimize drops pinned variables (lb == ub) from the problem; keep its iterates for those fits
        return minimize(
            objective_fn(spec),
            theta0,
            args=(data, spec, obj),
            jac=True,
            method="L-BFGS-B",
            bounds=box,
            options={"ftol": ftol, "gtol": gtol, "maxiter": maxiter},
        )
    return minimize_lbfgsb(objective_fn(spec), theta0, (data, spec, obj), box, ftol, gtol, maxiter)


def polish(
    theta: np.ndarray, data: FitData, spec: LawSpec, obj: Objective, box: list, rounds: int = 4
) -> FitResult:
    """Restart L-BFGS-B from its own answer (fresh curvature memory) until the objective stops falling.

    A restart that cannot improve is also the convergence test for non-smooth losses (mae, asymmetric),
    whose gradient need not vanish at the optimum."""
    res = local_fit(theta, data, spec, obj, box)
    iterations, hit_limit = int(res.nit), res.status == 1
    best_x, best_f, message = res.x, float(res.fun), str(res.message)
    stalled = False
    for _ in range(rounds):
        again = local_fit(best_x, data, spec, obj, box)
        iterations += int(again.nit)
        improved = best_f - float(again.fun)
        if improved > 0:
            best_x, best_f, message, hit_limit = (
                again.x,
                float(again.fun),
                str(again.message),
                again.status == 1,
            )
        if improved <= 1e-12 * max(best_f, 1e-300) + 1e-18:
            stalled = True
            break
    f, grad = objective_fn(spec)(best_x, data, spec, obj)
    gnorm = _projected_grad_norm(best_x, grad, box)
    smooth = obj.loss in ("huber", "mse")
    # Huber/MSE are C¹: at a true optimum the gradient is ~0 on the objective's scale.
    grad_ok = (not smooth) or gnorm <= 1e-6 * max(1.0, abs(f))
    converged = bool(np.isfinite(f) and stalled and not hit_limit and grad_ok)
    return FitResult(best_x, float(f), gnorm, iterations, converged, message)


def fit_law(
    data: FitData,
    spec: LawSpec,
    obj: Objective,
    grid: str = "default",
    n_best: int = 8,
    extra_starts: np.ndarray | None = None,
    agree: int = 3,
) -> FitResult:
    """Global fit: screen the start grid, optimise up to ``n_best`` best starts (stopping once ``agree`` of
    them reach the same best objective), polish the winner."""
    with threadpool_limits(**BLAS_LIMIT):
        return _fit_law(data, spec, obj, grid, n_best, extra_starts, agree)


def _fit_law(data, spec, obj, grid, n_best, extra_starts, agree) -> FitResult:
    min_p = float(np.min(data.P)) if spec.precision else None
    box = bounds(spec, min_p)
    starts = start_grid(spec, grid)
    if spec.offset:
        starts[:, -1] = np.minimum(0.0, box[-1][1])
    candidates = screen(starts, data, spec, obj, n_best)
    if extra_starts is not None:
        candidates = np.vstack([candidates, np.atleast_2d(extra_starts)])
    # Optimise the screened starts best-first; stop once `agree` of them land on the best objective
    # (to 1e-9 relative): further starts of the same basin only cost time.
    best, agreeing, tried = None, 0, 0
    for x0 in candidates:
        run = local_fit(x0, data, spec, obj, box)
        tried += 1
        if not np.isfinite(run.fun):
            continue
        tol = 1e-9 * abs(best.fun) if best is not None else 0.0
        if best is None or run.fun < best.fun - tol:  # a better basin
            best, agreeing = run, 1
        elif run.fun <= best.fun + tol:  # the same basin again
            agreeing += 1
            best = run if run.fun < best.fun else best
        if agreeing >= agree:
            break
    if best is None:
        best = local_fit(candidates[0], data, spec, obj, box)
    result = polish(best.x, data, spec, obj, box)
    result.theta = canonical(result.theta, data, spec)
    result.iterations += int(best.nit)
    result.n_starts_screened, result.n_starts_optimised = len(starts), tried
    return result


def refit(theta0: np.ndarray, data: FitData, spec: LawSpec, obj: Objective) -> np.ndarray:
    """Warm-started refit (bootstrap resamples): one L-BFGS-B run plus one restart, no grid."""
    min_p = float(np.min(data.P)) if spec.precision else None
    box = bounds(spec, min_p)
    res = local_fit(theta0, data, spec, obj, box)
    again = local_fit(res.x, data, spec, obj, box)
    return canonical(again.x if again.fun <= res.fun else res.x, data, spec)


def profile_gamma(
    theta: np.ndarray, data: FitData, spec: LawSpec, obj: Objective, n_points: int = 13
) -> list[dict[str, list[float]]]:
    """The objective profiled over each γ: at every grid γ, the minimum over all other parameters.

    Where γ is identified the profile has an interior minimum at the fitted γ; without a high-precision anchor
    it keeps falling towards a bound (docs/method.md §6, γ profile).  The walk goes outwards from the optimum,
    each point warm-started from its neighbour.  ftol=1e-12 is an *absolute* change of ~1e-9 of an
    objective of 1e-3: ample for a diagnostic curve, and 3-5x cheaper than ftol=0."""
    if not spec.precision:
        return []
    grid = np.geomspace(*GAMMA_BOUNDS, n_points)
    box = bounds(spec, float(np.min(data.P)))
    first_g = 4 + (not spec.tie)
    out = []
    with threadpool_limits(**BLAS_LIMIT):
        for col in range(first_g, first_g + spec.n_gamma):
            values = np.empty(n_points)
            centre = int(np.searchsorted(grid, np.exp(theta[col])))
            for order in (range(centre, n_points), range(centre - 1, -1, -1)):
                start = np.array(theta, dtype=float)
                for i in order:
                    start[col] = np.log(grid[i])
                    pinned = list(box)
                    pinned[col] = (start[col], start[col])
                    res = local_fit(start, data, spec, obj, pinned, gtol=1e-9, ftol=1e-12)
                    values[i], start = res.fun, res.x
            out.append({"gamma": grid.tolist(), "objective": values.tolist()})
    return out


def canonical(theta: np.ndarray, data: FitData, spec: LawSpec) -> np.ndarray:
    """Pin γ where the data cannot: with a single γ and one P value on every (weighted) row, the capacity
    factor c(P, γ) is a constant and only A·c^(−α) is identified.  Move along that exactly flat direction to
    γ at its lower bound, where c = 1 and the law *is* Chinchilla (same A), and let the γ flag say so."""
    if not spec.precision or spec.n_gamma != 1 or spec.offset:
        return theta
    used = data.weight > 0
    if len(np.unique(data.P[used])) != 1:
        return theta
    theta = np.array(theta, dtype=float)
    g_col = 4 + (not spec.tie)
    p_value = data.P[used][0]
    old_log_c = np.log(-np.expm1(-p_value / np.exp(theta[g_col])))
    new_g = np.log(GAMMA_BOUNDS[0])
    new_log_c = np.log(-np.expm1(-p_value / np.exp(new_g)))
    theta[0] += theta[3] * (new_log_c - old_log_c)  # a − α·log c stays the same
    theta[g_col] = new_g
    return theta
