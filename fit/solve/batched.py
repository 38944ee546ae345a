"""Bootstrap refits of all resamples of one fit at once: a batched projected Newton method (issue 14 item 7).

The K resamples of a bootstrap job share the rows and differ only in row weights, so the objective, its
gradient and its exact Hessian for all K parameter vectors are a few numpy operations on (K, n, k) arrays.

Why Newton with the exact Hessian, not L-BFGS-B or Gauss-Newton: Huber δ = 1e-3 on log residuals of ~1e-2 is
almost L1.  At the optimum only a handful of rows sit inside ±δ; the rest contribute a constant slope ±δ and,
through the law's curvature, the second-order term −ρ'(r)·∇²log L̂.  L-BFGS-B crawls along the kinks
(hundreds to thousands of evaluations per resample) and an IRLS / Gauss-Newton majoriser leaves out that
second-order term and crawled too (docs/performance.md §4).  With it, the iteration is Newton on the piecewise
smooth objective and converges in a few dozen steps once the set of rows inside ±δ settles.

Each step: free variables are those not held at a bound by the gradient (projected Newton); the step solves
the scaled Hessian through its eigen-decomposition with |eigenvalue| + μ (a descent direction even where the
Hessian is indefinite), is clipped to the box, and is accepted only if the objective falls; μ grows on
rejection (Levenberg-Marquardt).  A resample stops when its projected gradient is below ``GTOL`` (tighter than
the L-BFGS-B refit's gtol = 1e-10, so L-BFGS-B started there would stop at once), or when no step lowers its
objective at any μ (a minimum to float precision where the gradient is tiny; see FLOOR_GTOL).  Every
resample's iterates depend only on its own weights (updates are per resample, and converged ones are frozen),
so the draws do not depend on how the resamples are chunked over workers.
"""

from __future__ import annotations

import numpy as np

from fit.law import FULL_P
from fit.solve.objective import (
    FitData,
    LawSpec,
    Objective,
    _lse,
    _rho,
    log_terms,
    objective_and_grad,
    objective_batch,
)
from fit.solve.optimize import canonical
from fit.solve.staged import MIN_DISTINCT, anchor_data, n_base, refit_any, spec_bounds

GTOL = 5e-11  # projected-gradient ∞-norm at which a resample has converged
# A resample no step lowers at any μ, with its projected gradient at most this, sits at a minimum to float
# precision (AT_FLOOR) and keeps its draw. Measured on the demo table (2 × 1000 stratified resamples,
# 2026-12-02): all 345 such stalls had gradients 5e-11 … 2.5e-8, none an objective more than 1.5e-15
# (relative) above the L-BFGS-B refit's and 65 one more than 1e-9 below it; refitting them was 60 % of the
# bootstrap's time. Larger-gradient stalls and UNFINISHED ones still get the L-BFGS-B refit.
FLOOR_GTOL = 1e-6
# ordered from best to worst: a two-stage resample's status is the worse of its two stages'
CONVERGED, AT_FLOOR, STALLED, UNFINISHED = 0, 1, 2, 3
# Newton steps. Most resamples need 100-400; the slow ones (~8 % of the demo's) crawl along the flat E -> 0
# valley and need up to ~3000. Only the unconverged resamples keep stepping, so the cap costs little: at 500
# those went to the L-BFGS-B refit (~0.4 s each), and with more steps all 16 of 200 on the demo's k-means
# table ended at or below that refit's objective (measured 2026-12-02).
MAX_ITER = 5000
LINE_SEARCH = 40  # step halvings
MU = 1e-12  # eigenvalue floor relative to the largest scaled eigenvalue: Newton, kept finite
# Levenberg-Marquardt: a resample whose line search fails retries with μ × MU_GROWTH (towards a scaled
# gradient step) and is STALLED only past MU_MAX; μ shrinks back by MU_GROWTH after an accepted step. With
# the floor alone, a near-singular Hessian gave steps ~1e12× too long for 40 halvings: 4 of 200 uniform
# demo resamples "stalled" 4-16 % above the L-BFGS-B optimum with gradients of 1e-2 (measured 2026-12-02).
MU_GROWTH = 1e3
MU_MAX = 1e3
# (resample, row, parameter) cells refitted together at most: value_grad_hess holds ~8 (K, n, k) arrays, so
# 2^22 cells keep a block near 270 MB.  Each resample's iterates depend only on its own weights, so splitting
# K changes no draw; a demo-sized table (60 rows, k = 6) still refits 11,650 resamples in one block.
NEWTON_CELLS = 2**22


def supports(spec: object, obj: Objective) -> bool:
    """Whether this module can refit the law shape: fit.solve.objective's laws with a smooth-enough loss on
    log
    residuals.  The efficiency and penalty forms (fit.solve.forms) and mae/asymmetric/raw keep the L-BFGS-B
    path."""
    return isinstance(spec, LawSpec) and obj.space == "log" and obj.loss in ("huber", "mse")


def _rho2(r: np.ndarray, obj: Objective) -> np.ndarray:
    """ρ''(r): 1 inside ±δ for Huber (0 outside), 2 for mse."""
    if obj.loss == "huber":
        return (np.abs(r) <= obj.delta).astype(float)
    return np.full_like(r, 2.0)


def _columns(spec: LawSpec) -> tuple[int, int | None, int, int | None]:
    """Indices of α, β (None when tied), the first γ and p0 (None without the offset) in θ."""
    g0 = 4 if spec.tie else 5
    p0 = g0 + spec.n_gamma if spec.precision and spec.offset else None
    return 3, None if spec.tie else 4, g0, p0


def _derivatives(theta: np.ndarray, data: FitData, spec: LawSpec):
    """log L̂ (K, n), the term gradients ∇t1, ∇t2, ∇t3 (K, n, k), softmax weights s (3 × (K, n)) and the
    nonzero second derivatives of t1 as (row, col, (K, n) values) triples.

    log L̂ = logsumexp(t1, t2, t3).  Only t1 = a − α log N_eff(γ, p0) is nonlinear; with u = (P − p0)/γ,
    q = 1/expm1(u) and q' = −q(1 + q): ∂t1/∂g = α u q, ∂t1/∂p0 = α q/γ and the second derivatives below."""
    K, k = theta.shape
    n = len(data.L)
    i_alpha, i_beta, g0, i_p0 = _columns(spec)
    t1, t2, t3, log_n, u = log_terms(theta, data, spec)
    lse, soft = _lse(t1, t2, t3)
    alpha = theta[:, [i_alpha]]  # (K, 1)
    T1, T2, T3 = np.zeros((K, n, k)), np.zeros((K, n, k)), np.zeros((K, n, k))
    T1[:, :, 0], T2[:, :, 1], T3[:, :, 2] = 1.0, 1.0, 1.0
    T1[:, :, i_alpha] = -log_n
    T2[:, :, i_alpha if i_beta is None else i_beta] = -data.logD[None, :]
    second = []  # (i, j, values): ∂²t1/∂θi∂θj on each row, listed once per unordered pair
    if spec.precision:
        q = 1.0 / np.expm1(u)
        dq = -q * (1.0 + q)
        for grp in range(spec.n_gamma):
            mine = data.group == grp  # row i's γ is column g0 + its group
            col = g0 + grp
            T1[:, :, col] = alpha * u * q * mine
            second.append((i_alpha, col, u * q * mine))
            second.append((col, col, alpha * (-u * q - u * u * dq) * mine))
            if i_p0 is not None:
                second.append((col, i_p0, -alpha * np.exp(-theta[:, [col]]) * (q + u * dq) * mine))
        if i_p0 is not None:
            inv_gamma = np.exp(-theta[:, g0 : g0 + spec.n_gamma])[:, data.group]  # (K, n)
            T1[:, :, i_p0] = alpha * q * inv_gamma
            second.append((i_alpha, i_p0, q * inv_gamma))
            second.append((i_p0, i_p0, -alpha * dq * inv_gamma**2))
    return lse, (T1, T2, T3), soft, second


def _gram(x: np.ndarray, weight: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Σ_rows weight·x yᵀ for (K, n, k) arrays: a stacked matrix product, one small product per resample."""
    return np.matmul((x * weight[:, :, None]).transpose(0, 2, 1), y)


def value_grad_hess(
    theta: np.ndarray, weight: np.ndarray, data: FitData, spec: LawSpec, obj: Objective
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objective (K,), gradient (K, k) and exact Hessian (K, k, k) at θ (K, k) under row weights (K, n).

    With r = log L − log L̂ and J = ∇log L̂ = Σ s_k ∇t_k:  ∇f = −Σ w ρ'(r) J and
    ∇²f = Σ w ρ''(r) J Jᵀ − Σ w ρ'(r) ∇²log L̂,  ∇²log L̂ = Σ s_k (∇²t_k + ∇t_k ∇t_kᵀ) − J Jᵀ."""
    lse, (T1, T2, T3), (s1, s2, s3), second = _derivatives(theta, data, spec)
    J = s1[:, :, None] * T1 + s2[:, :, None] * T2 + s3[:, :, None] * T3
    r = data.logL[None, :] - lse
    value, slope = _rho(r, obj)
    with np.errstate(invalid="ignore", over="ignore"):
        f = (value * weight).sum(axis=1)
        ws = weight * slope
        grad = -(ws[:, :, None] * J).sum(axis=1)
        hess = _gram(J, weight * _rho2(r, obj) + ws, J)
        hess -= _gram(T1, ws * s1, T1) + _gram(T2, ws * s2, T2) + _gram(T3, ws * s3, T3)
        for i, j, vals in second:
            h = (ws * s1 * vals).sum(axis=1)
            hess[:, i, j] -= h
            if i != j:
                hess[:, j, i] -= h
    return np.where(np.isfinite(f), f, np.inf), grad, hess


def _held(theta: np.ndarray, grad: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Variables a bound holds: at the lower bound with the gradient pushing down, or at the upper pushing up
    (and pinned ones, lo == hi).  Their projected gradient is zero, as in L-BFGS-B's convergence test."""
    at_lo = theta <= lo
    at_hi = theta >= hi
    return (at_lo & (grad >= 0)) | (at_hi & (grad <= 0)) | (lo == hi)


def _step(grad: np.ndarray, hess: np.ndarray, held: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Damped Newton steps (K, k) on the free variables: diagonally scaled, |eigenvalues| + μ·max|eig|."""
    free = ~held
    g = np.where(free, grad, 0.0)
    h = hess * (free[:, :, None] & free[:, None, :])
    diag = np.abs(np.diagonal(h, axis1=1, axis2=2))
    scale = np.sqrt(np.maximum(diag, 1e-12 * diag.max(axis=1, keepdims=True) + 1e-300))
    hs = h / (scale[:, :, None] * scale[:, None, :])
    hs = hs + np.eye(h.shape[1])[None] * held[:, :, None]  # held variables: identity row, zero gradient
    eig, vec = np.linalg.eigh(hs)
    mag = np.abs(eig)
    coeff = (vec.transpose(0, 2, 1) * (g / scale)[:, None, :]).sum(axis=2)
    coeff = coeff / (mag + mu[:, None] * mag.max(axis=1, keepdims=True))
    return np.where(free, -(vec * coeff[:, None, :]).sum(axis=2) / scale, 0.0)


def newton_batch(
    theta0: np.ndarray,
    weight: np.ndarray,
    data: FitData,
    spec: LawSpec,
    obj: Objective,
    lo: np.ndarray,
    hi: np.ndarray,
    gtol: float = GTOL,
    max_iter: int = MAX_ITER,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimise every resample's objective from θ0 within [lo, hi]: returns θ (K, k), objective (K,) and
    each resample's status: CONVERGED (projected gradient ≤ gtol), AT_FLOOR (no step lowers the objective
    at any μ, projected gradient ≤ FLOOR_GTOL), STALLED (the same with a larger gradient) or UNFINISHED
    (max_iter).  lo, hi: (k,) or (K, k), ±inf for no bound."""
    K, k = len(weight), theta0.shape[-1]
    lo, hi = np.broadcast_to(lo, (K, k)), np.broadcast_to(hi, (K, k))
    theta = np.clip(np.broadcast_to(theta0, (K, k)), lo, hi).astype(float)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        f, grad, hess = value_grad_hess(theta, weight, data, spec, obj)
    active = np.isfinite(f)
    status = np.where(active, UNFINISHED, STALLED)
    mu = np.full(K, MU)
    for _ in range(max_iter):
        held = _held(theta, grad, lo, hi)
        pg = np.where(held, 0.0, np.abs(grad)).max(axis=1)
        done = active & (pg <= gtol)
        status[done] = CONVERGED
        active &= ~done
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            step = _step(grad[idx], hess[idx], held[idx], mu[idx])
            new, f_new, moved = _backtrack(
                theta[idx], f[idx], step, lo[idx], hi[idx], weight[idx], data, spec, obj
            )
        rejected = idx[~moved]
        mu[rejected] *= MU_GROWTH
        gave_up = rejected[mu[rejected] > MU_MAX]
        status[gave_up] = np.where(pg[gave_up] <= FLOOR_GTOL, AT_FLOOR, STALLED)
        active[gave_up] = False
        acc = idx[moved]
        mu[acc] = np.maximum(mu[acc] / MU_GROWTH, MU)
        if len(acc):
            theta[acc] = new[moved]
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                f[acc], grad[acc], hess[acc] = value_grad_hess(theta[acc], weight[acc], data, spec, obj)
    return theta, f, status


def _backtrack(theta, f, step, lo, hi, weight, data, spec, obj):
    """Halve each resample's step, projected onto the box, until its objective falls (LINE_SEARCH tries)."""
    t = np.ones(len(theta))
    new, f_new = theta.copy(), f.copy()
    moved = np.zeros(len(theta), dtype=bool)
    todo = np.flatnonzero(np.isfinite(step).all(axis=1))
    for _ in range(LINE_SEARCH):
        if not len(todo):
            break
        trial = np.clip(theta[todo] + t[todo, None] * step[todo], lo[todo], hi[todo])
        f_trial = objective_batch(trial, data, spec, obj, weight=weight[todo])
        ok = f_trial < f[todo]
        new[todo[ok]], f_new[todo[ok]], moved[todo[ok]] = trial[ok], f_trial[ok], True
        todo = todo[~ok]
        t[todo] *= 0.5
    return new, f_new, moved


def box_arrays(box: list[tuple[float | None, float | None]]) -> tuple[np.ndarray, np.ndarray]:
    """A fit.solve.optimize bounds list as lower and upper arrays (±inf for None)."""
    lo = np.array([-np.inf if b is None else float(b) for b, _ in box])
    hi = np.array([np.inf if b is None else float(b) for _, b in box])
    return lo, hi


def _anchor_ok(data: FitData, weight: np.ndarray) -> np.ndarray:
    """Per resample, whether its 16-bit anchor rows can fit stage 1 (fit.solve.staged.anchor_data's test)."""
    anchor = data.P >= FULL_P
    ok = np.empty(len(weight), dtype=bool)
    for i, w in enumerate(weight):
        used = (w > 0) & anchor
        ok[i] = min(len(np.unique(data.N[used])), len(np.unique(data.D[used]))) >= MIN_DISTINCT
    return ok


def refit_batch(
    theta0: np.ndarray,
    data: FitData,
    weight: np.ndarray,
    spec: LawSpec,
    obj: Objective,
    two_stage: bool = False,
) -> np.ndarray:
    """fit.solve.staged.refit_any for K resamples (row weights (K, n)) at once: (K, k) θ draws.

    A resample whose Newton iteration neither reached gtol nor a minimum to float precision (it stalled with
    a larger gradient, or ran out of iterations) is also refitted by refit_any, and keeps whichever answer has
    the lower objective.  That no draw, AT_FLOOR ones included, ends worse than refit_any's alone is
    tested on synthetic tables and on the demo table (tests/test_batched_refit.py).
    A two-stage resample with too few anchors is NaN, as there."""
    block = max(1, NEWTON_CELLS // (len(data.L) * len(np.atleast_1d(theta0))))
    if len(weight) > block:  # bounded memory on large tables (NEWTON_CELLS); the same draws
        return np.vstack([refit_batch(theta0, data, weight[i : i + block], spec, obj, two_stage)
                          for i in range(0, len(weight), block)])  # fmt: skip
    K = len(weight)
    theta0 = np.asarray(theta0, dtype=float)
    theta = np.tile(theta0, (K, 1))
    lo, hi = (np.tile(b, (K, 1)) for b in box_arrays(spec_bounds(spec, data)))
    ok = np.ones(K, dtype=bool)
    status = np.full(K, CONVERGED)
    if two_stage and spec.precision:
        ok = _anchor_ok(data, weight)
        nb = n_base(spec)
        chin = LawSpec(tie=spec.tie)
        anchors = FitData(data.N, data.D, data.L)
        lo1, hi1 = box_arrays(spec_bounds(chin, anchors))
        anchor_weight = weight[ok] * (data.P >= FULL_P)
        theta[ok, :nb], _, status[ok] = newton_batch(
            theta[ok, :nb], anchor_weight, anchors, chin, obj, lo1, hi1
        )
        lo[:, :nb] = hi[:, :nb] = theta[:, :nb]  # stage 2: the prefix pinned, as refit_any pins it
    theta[ok], _, second = newton_batch(theta[ok], weight[ok], data, spec, obj, lo[ok], hi[ok])
    status[ok] = np.maximum(status[ok], second)
    theta[~ok] = np.nan
    for i in np.flatnonzero(ok):
        rows = data.with_weight(weight[i])
        theta[i] = canonical(theta[i], rows, spec)
        if status[i] <= AT_FLOOR:
            continue
        # The L-BFGS-B refit from θ0, as before this module; the better answer stays.  Not from the stall
        # point: with a fixed μ, L-BFGS-B polishing from there left 3 of 98 uniform demo stalls up to 1e-3
        # above the refit from θ0 (those stalls were the too-long steps MU_GROWTH now shortens).
        # AT_FLOOR draws skip this: they are tested against it instead (tests/test_batched_refit.py).
        old = refit_any(theta0, rows, spec, obj, two_stage)
        if _score(old, rows, spec, obj, two_stage) <= _score(theta[i], rows, spec, obj, two_stage):
            theta[i] = old
    return theta


def _score(theta: np.ndarray, rows: FitData, spec: LawSpec, obj: Objective, two_stage: bool) -> tuple:
    """What a refit minimises: two-stage, the anchors' Chinchilla objective first, then the full one."""
    full = objective_and_grad(theta, rows, spec, obj)[0]
    if not (two_stage and spec.precision):
        return (full,)
    anchors = anchor_data(rows)
    return (objective_and_grad(theta[: n_base(spec)], anchors, LawSpec(tie=spec.tie), obj)[0], full)
