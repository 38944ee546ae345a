"""Fitting one scaling law: the objective with its analytic gradient, start-grid screening, L-BFGS-B.

The law is fitted in log space (Epoch AI's parametrisation, design §7):

    log L̂ = logsumexp(a − α·log N_eff,  b − β·log D,  e),   A = e^a, B = e^b, E = e^e
    log N_eff = log N + log(1 − exp(−(P − p0)/γ)),           γ = e^g

``p0`` is the optional exponent offset written as a bit shift (Kumar's ``exp(−P/γ + n)`` has n = p0/γ); the
shift form keeps the capacity positive with a plain box bound p0 < min P.  Parameter vector θ, in order:
``a, b, e, α, [β unless tied], g_1..g_G (precision law: one γ per row group), [p0 with the offset]``.

Why each choice is made is in docs/method.md §6; the short version: summed loss + ftol=0 + gtol=1e-10,
because scipy's default stopping rule is absolute and fires at objective sizes of 1e-3.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

LOSSES = ("huber", "mse", "mae", "asymmetric")
SPACES = ("log", "raw")
GRIDS = ("coarse", "default", "fine")
GAMMA_BOUNDS = (0.1, 50.0)
EXPONENT_BOUNDS = (0.0, 10.0)
# _NO_BLAS: reductions are written as (x * w).sum(), never x @ w.  A matrix-vector product goes to a
# multi-threaded BLAS whose threads spin-wait; on a loaded 2-core machine that made 8 L-BFGS-B runs take
# 10 s instead of 0.16 s (measured).  Elementwise ufuncs + sum have no threads to fight over.
SCREEN_CHUNK = 4096  # starts evaluated per vectorised block: bounds memory at ~SCREEN_CHUNK·n_rows floats


@dataclass(frozen=True)
class Objective:
    """Which per-point loss, on which residual, and its knobs."""

    loss: str = "huber"
    delta: float = 1e-3  # Huber threshold on the residual (log residuals of ~1e-2 make δ=1e-3 almost L1)
    space: str = "log"  # residual of log L (default) or of L
    asym_weight: float = 10.0  # over-prediction penalty of the asymmetric loss


@dataclass(frozen=True)
class LawSpec:
    """Shape of the parameter vector."""

    precision: bool = False
    n_gamma: int = 1  # γ parameters (per-format γ in a shared fit); ignored for chinchilla
    tie: bool = False  # α = β
    offset: bool = False  # fit the exponent offset p0

    @property
    def n_params(self) -> int:
        return 4 + (not self.tie) + (self.n_gamma if self.precision else 0) + self.offset


@dataclass
class FitData:
    """The rows one fit sees, already in log space.  ``group`` picks each row's γ; ``weight`` multiplies its
    loss (bootstrap resamples and leave-out fits change weights, never the arrays)."""

    N: np.ndarray  # (n,)
    D: np.ndarray  # (n,)
    L: np.ndarray  # (n,)
    P: np.ndarray | None = None  # (n,) bits per weight, precision law only
    group: np.ndarray | None = None  # (n,) int γ index
    weight: np.ndarray | None = None  # (n,)
    logN: np.ndarray = field(init=False)
    logD: np.ndarray = field(init=False)
    logL: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.N, self.D, self.L = (np.asarray(x, dtype=float) for x in (self.N, self.D, self.L))
        self.logN, self.logD, self.logL = np.log(self.N), np.log(self.D), np.log(self.L)
        if self.P is not None:
            self.P = np.asarray(self.P, dtype=float)
        n = len(self.L)
        self.group = np.zeros(n, dtype=int) if self.group is None else np.asarray(self.group, dtype=int)
        self.weight = np.ones(n) if self.weight is None else np.asarray(self.weight, dtype=float)

    def with_weight(self, weight: np.ndarray) -> FitData:
        return FitData(self.N, self.D, self.L, self.P, self.group, weight)


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


def _rho(r: np.ndarray, obj: Objective) -> tuple[np.ndarray, np.ndarray]:
    """Per-point loss ρ(r) and its derivative ρ'(r); r = observed − predicted."""
    if obj.loss == "huber":
        small = np.abs(r) <= obj.delta
        value = np.where(small, 0.5 * r * r, obj.delta * (np.abs(r) - 0.5 * obj.delta))
        return value, np.clip(r, -obj.delta, obj.delta)
    if obj.loss == "mse":
        return r * r, 2.0 * r
    if obj.loss == "mae":
        return np.abs(r), np.sign(r)
    # asymmetric: r < 0 means the law over-predicts the loss; weight it so the fit hugs the lower envelope
    scale = np.where(r < 0, obj.asym_weight, 1.0)
    return scale * np.abs(r), scale * np.sign(r)


def _unpack(theta: np.ndarray, spec: LawSpec) -> dict[str, np.ndarray]:
    """Split θ (S, k) into named columns, each (S,) or (S, G) for g."""
    cols = {"a": theta[:, 0], "b": theta[:, 1], "e": theta[:, 2], "alpha": theta[:, 3]}
    i = 4
    if spec.tie:
        cols["beta"] = cols["alpha"]
    else:
        cols["beta"], i = theta[:, 4], 5
    if spec.precision:
        cols["g"], i = theta[:, i : i + spec.n_gamma], i + spec.n_gamma
        cols["p0"] = theta[:, i] if spec.offset else np.zeros(len(theta))
    return cols


def _terms(theta: np.ndarray, data: FitData, spec: LawSpec) -> tuple[np.ndarray, ...]:
    """The three log-space terms, each (S, n), plus u = (P − p0)/γ per row (or None)."""
    c = _unpack(theta, spec)
    log_n = np.broadcast_to(data.logN, (len(theta), len(data.logN)))
    u = None
    if spec.precision:
        gamma_row = np.exp(c["g"][:, data.group])  # (S, n)
        u = (data.P[None, :] - c["p0"][:, None]) / gamma_row
        log_n = log_n + np.log(-np.expm1(-u))
    t1 = c["a"][:, None] - c["alpha"][:, None] * log_n
    t2 = c["b"][:, None] - c["beta"][:, None] * data.logD[None, :]
    t3 = np.broadcast_to(c["e"][:, None], t1.shape)
    return t1, t2, t3, log_n, u


def _lse(t1: np.ndarray, t2: np.ndarray, t3: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    top = np.maximum(np.maximum(t1, t2), t3)
    e1, e2, e3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(t3 - top)
    total = e1 + e2 + e3
    return top + np.log(total), (e1 / total, e2 / total, e3 / total)


def objective_batch(
    thetas: np.ndarray, data: FitData, spec: LawSpec, obj: Objective, log_n: np.ndarray | None = None
) -> np.ndarray:
    """Objective at many parameter vectors at once: thetas (S, k) -> (S,).  Used to screen the start grid.

    ``log_n`` (n,) is log N_eff when every θ shares the same γ and p0 (the screening loop passes it so the
    capacity factor is computed once per γ value, not once per start)."""
    if log_n is None:
        t1, t2, t3, _, _ = _terms(thetas, data, spec)
    else:
        c = _unpack(thetas, spec)
        t1 = c["a"][:, None] - c["alpha"][:, None] * log_n[None, :]
        t2 = c["b"][:, None] - c["beta"][:, None] * data.logD[None, :]
        t3 = c["e"][:, None]
    top = np.maximum(np.maximum(t1, t2), t3)
    lse = top + np.log(np.exp(t1 - top) + np.exp(t2 - top) + np.exp(t3 - top))  # (S, n)
    resid = data.logL - lse if obj.space == "log" else data.L - np.exp(lse)
    value, _ = _rho(resid, obj)
    with np.errstate(invalid="ignore", over="ignore"):
        out = (value * data.weight).sum(axis=1)  # (S,); no BLAS call (see _NO_BLAS)
    return np.where(np.isfinite(out), out, np.inf)


def objective_and_grad(theta: np.ndarray, data: FitData, spec: LawSpec, obj: Objective) -> tuple:
    """Objective and its analytic gradient at one θ (k,)."""
    t1, t2, t3, log_n, u = _terms(theta[None, :], data, spec)
    lse, (w1, w2, w3) = _lse(t1, t2, t3)
    lse, w1, w2, w3, log_n = lse[0], w1[0], w2[0], w3[0], log_n[0]
    if obj.space == "log":
        resid, dresid_dlse = data.logL - lse, -1.0
    else:
        pred = np.exp(lse)
        resid, dresid_dlse = data.L - pred, -pred
    value, slope = _rho(resid, obj)
    f = float((value * data.weight).sum())
    coef = data.weight * slope * dresid_dlse  # d f / d lse, per row
    c1, c2 = coef * w1, coef * w2  # d f / d t1, d f / d t2
    c = _unpack(theta[None, :], spec)
    grad = [c1.sum(), c2.sum(), (coef * w3).sum()]
    d_alpha, d_beta = -(c1 * log_n).sum(), -(c2 * data.logD).sum()
    grad += [d_alpha + d_beta] if spec.tie else [d_alpha, d_beta]
    if spec.precision:
        u = u[0]
        alpha = c["alpha"][0]
        # d t1 / d u = −α / expm1(u);  d u / d g = −u;  d u / d p0 = −1/γ
        dt1_du = -alpha / np.expm1(u)
        grad += list(np.bincount(data.group, weights=c1 * dt1_du * -u, minlength=spec.n_gamma))
        if spec.offset:
            gamma_row = np.exp(c["g"][0][data.group])
            grad.append(float((c1 * dt1_du * (-1.0 / gamma_row)).sum()))
    return f, np.asarray(grad, dtype=float)


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
    for idx, key in groups:
        log_n = None if key is None else _terms(starts[idx[:1]], data, spec)[3][0]
        for i in range(0, len(idx), SCREEN_CHUNK):
            chunk = idx[i : i + SCREEN_CHUNK]
            values[chunk] = objective_batch(starts[chunk], data, spec, obj, log_n)
    order = np.argsort(values, kind="stable")[:keep]
    return starts[order]


def _projected_grad_norm(theta: np.ndarray, grad: np.ndarray, box: list) -> float:
    g = grad.copy()
    for i, (lo, hi) in enumerate(box):
        if lo is not None and theta[i] <= lo + 1e-12 and g[i] > 0:
            g[i] = 0.0
        if hi is not None and theta[i] >= hi - 1e-12 and g[i] < 0:
            g[i] = 0.0
    return float(np.max(np.abs(g))) if len(g) else 0.0


def local_fit(
    theta0: np.ndarray,
    data: FitData,
    spec: LawSpec,
    obj: Objective,
    box: list,
    gtol: float = 1e-10,
    maxiter: int = 10_000,
):
    """One L-BFGS-B run with tight tolerances (ftol=0: stop only when no decrease is possible)."""
    theta0 = np.clip(
        theta0,
        [lo if lo is not None else -np.inf for lo, _ in box],
        [hi if hi is not None else np.inf for _, hi in box],
    )
    return minimize(
        objective_and_grad,
        theta0,
        args=(data, spec, obj),
        jac=True,
        method="L-BFGS-B",
        bounds=box,
        options={"ftol": 0.0, "gtol": gtol, "maxiter": maxiter, "maxcor": 20},
    )


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
    f, grad = objective_and_grad(best_x, data, spec, obj)
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


def named_params(theta: np.ndarray, spec: LawSpec) -> list[dict[str, float]]:
    """θ -> one law-parameter mapping per γ group (A, B, E, alpha, beta[, gamma, offset])."""
    c = _unpack(np.asarray(theta, dtype=float)[None, :], spec)
    base = {
        "A": float(np.exp(c["a"][0])),
        "B": float(np.exp(c["b"][0])),
        "E": float(np.exp(c["e"][0])),
        "alpha": float(c["alpha"][0]),
        "beta": float(c["beta"][0]),
    }
    if not spec.precision:
        return [base]
    out = []
    for g in c["g"][0]:
        gamma = float(np.exp(g))
        entry = {**base, "gamma": gamma}
        if spec.offset:
            entry["offset"] = float(c["p0"][0]) / gamma  # Kumar's n in exp(−P/γ + n)
        out.append(entry)
    return out


def log_params(theta: np.ndarray, spec: LawSpec) -> dict[str, float]:
    """The raw optimisation variables, stored at full precision next to the derived parameters."""
    c = _unpack(np.asarray(theta, dtype=float)[None, :], spec)
    out = {k: float(c[k][0]) for k in ("a", "b", "e", "alpha", "beta")}
    if spec.precision:
        out.update({f"g{i}": float(g) for i, g in enumerate(c["g"][0])})
        if spec.offset:
            out["p0"] = float(c["p0"][0])
    return out
