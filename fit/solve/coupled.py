"""The coupled law form (Kaplan's coupling of N and D; Skaling, Videau et al. 2026): its log-space objective.

    coupled:  L = (A·N_eff^(−α) + B·D^(−β))^k + E,   N_eff = N·(1 − exp(−P/γ))  (N itself without P)
    log L̂ = logsumexp(k·logsumexp(a − α·log N_eff, b − β·log D), e)

The additive laws have ∂²L/∂N∂D = 0: a parameter buys the same loss at any D.  With k < 1 it buys less where
D is small (the bracket is large there), which is where the additive form misses first (the large-N,
small-D/N corner).  k = 1 is the precision law exactly (Chinchilla's, without P), so the coupled fit starts
from the additive optimum and can only lower the objective.

θ = ``a, b, e, α, [β unless tied], k``, then ``g_1..g_G`` (log γ per group) when the rows have P: the first
``n_base + 1`` entries are the P-free coupled law, so a two-stage fit pins them as one prefix.  No exponent
offset: the precision law's ``--offset`` is not offered here (fit.law.n_eff would honour an ``offset`` key).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fit.solve.objective import (
    EXPONENT_BOUNDS,
    GAMMA_BOUNDS,
    FitData,
    Objective,
    chinchilla_params,
    loss_and_slope,
)

# k's box.  Published fits give k ≈ 0.31-0.45 on two large grids and 0.77-0.90 on two others (Skaling); below
# 0.05 the bracket^k is ≈ 1 + k·log(bracket) and only the products k·α, k·β are identified (as only A·γ^α is
# when γ runs off), and with α ≤ 10 (EXPONENT_BOUNDS) k = 0.05 still allows a marginal N exponent k·α of 0.5,
# above any published one.  k > 1 (super-additive terms) has no published support; 3 leaves noise room
# without letting α, β shrink towards 0.  A k at either bound is flagged (k_at_bound).
K_BOUNDS = (0.05, 3.0)
# k values the fit starts from, each mapped from the additive optimum (starts_from_additive): k = 1 is that
# optimum itself, so the coupled objective is never above the additive one.
K_STARTS = (1.0, 0.5, 0.3, 2.0)
MIN_SIZES = 3  # distinct N a coupled fit needs: k trades off against α with fewer (and ran to its bound)


@dataclass(frozen=True)
class CoupledSpec:
    """Shape of a coupled-law parameter vector; ``precision``: the rows have P (N_eff), else N itself."""

    precision: bool = True
    n_gamma: int = 1  # γ parameters (per-format γ in a shared fit)
    tie: bool = False  # α = β

    @property
    def n_base(self) -> int:
        return 4 + (not self.tie)

    @property
    def k_col(self) -> int:
        return self.n_base

    @property
    def n_params(self) -> int:
        return self.n_base + 1 + (self.n_gamma if self.precision else 0)

    @property
    def objective_fn(self):  # fit.solve.optimize.local_fit minimises this instead of fit.solve.objective's
        return objective_and_grad


def bounds(spec: CoupledSpec) -> list[tuple[float | None, float | None]]:
    out: list[tuple[float | None, float | None]] = [(None, None)] * 3 + [EXPONENT_BOUNDS] * (spec.n_base - 3)
    out.append(K_BOUNDS)
    if spec.precision:
        out += [(float(np.log(GAMMA_BOUNDS[0])), float(np.log(GAMMA_BOUNDS[1])))] * spec.n_gamma
    return out


def _log_n(theta: np.ndarray, data: FitData, spec: CoupledSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """(log N_eff per row, u = P/γ per row or None)."""
    if not spec.precision:
        return data.logN, None
    gamma_row = np.exp(theta[spec.k_col + 1 : spec.k_col + 1 + spec.n_gamma])[data.group]
    u = data.P / gamma_row
    return data.logN + np.log(-np.expm1(-u)), u


def _lse2(x: np.ndarray, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """logsumexp(x, y) and the softmax weights of x and y."""
    top = np.maximum(x, y)
    ex, ey = np.exp(x - top), np.exp(y - top)
    total = ex + ey
    return top + np.log(total), ex / total, ey / total


def log_prediction(theta: np.ndarray, data: FitData, spec: CoupledSpec) -> np.ndarray:
    """log L̂ per row at one θ."""
    theta = np.asarray(theta, dtype=float)
    beta = theta[3] if spec.tie else theta[4]
    log_n, _ = _log_n(theta, data, spec)
    inner, _, _ = _lse2(theta[0] - theta[3] * log_n, theta[1] - beta * data.logD)
    return _lse2(theta[spec.k_col] * inner, theta[2])[0]


def objective_and_grad(theta: np.ndarray, data: FitData, spec: CoupledSpec, obj: Objective) -> tuple:
    """Objective and its analytic gradient at one θ (k,); same signature as fit.solve.objective's.

    With s = logsumexp(t1, t2) (weights v1, v2) and log L̂ = logsumexp(k·s, e) (weights w_s, w_e):
    ∂/∂t_i = w_s·k·v_i, ∂/∂e = w_e, ∂/∂k = w_s·s; t1, t2 carry a, α, γ exactly as in the precision law."""
    theta = np.asarray(theta, dtype=float)
    a, b, e, alpha = (float(x) for x in theta[:4])
    beta = alpha if spec.tie else float(theta[4])
    k = float(theta[spec.k_col])
    log_n, u = _log_n(theta, data, spec)
    s, v1, v2 = _lse2(a - alpha * log_n, b - beta * data.logD)
    lse, w_s, w_e = _lse2(k * s, e)
    f, coef = loss_and_slope(lse, data, obj)  # coef: d f / d lse, per row
    c_s = coef * w_s  # d f / d (k·s)
    c1, c2 = c_s * k * v1, c_s * k * v2  # d f / d t1, d f / d t2
    grad = [c1.sum(), c2.sum(), (coef * w_e).sum()]
    d_alpha, d_beta = -(c1 * log_n).sum(), -(c2 * data.logD).sum()
    grad += [d_alpha + d_beta] if spec.tie else [d_alpha, d_beta]
    grad.append((c_s * s).sum())
    if spec.precision:
        # d t1 / d u = −α / expm1(u);  d u / d g = −u  (g = log γ)
        dt1_du = -alpha / np.expm1(u)
        grad += list(np.bincount(data.group, weights=c1 * dt1_du * -u, minlength=spec.n_gamma))
    return f, np.asarray(grad, dtype=float)


def starts_from_additive(theta_add: np.ndarray, spec: CoupledSpec) -> list[np.ndarray]:
    """Coupled starts from an additive optimum (fit.solve.objective's layout: a, b, e, α, [β], [g...]), one
    per K_STARTS value k0: a, b, α, β divided by k0, so that each term alone, (A·N^(−α))^k, is unchanged."""
    nb = spec.n_base
    out = []
    for k0 in K_STARTS:
        base = np.array(theta_add[:nb], dtype=float)
        base[[0, 1]] /= k0
        base[3:nb] /= k0
        out.append(np.r_[base, k0, theta_add[nb:]])
    return out


def canonical(theta: np.ndarray, data: FitData, spec: CoupledSpec) -> np.ndarray:
    """As fit.solve.optimize.canonical: with one γ and one P on every weighted row, only A·c^(−α) is
    identified; move along that flat direction to γ at its lower bound (c = 1), where the γ flag says so."""
    if not spec.precision or spec.n_gamma != 1:
        return theta
    used = data.weight > 0
    if len(np.unique(data.P[used])) != 1:
        return theta
    theta = np.array(theta, dtype=float)
    g_col, p_value = spec.k_col + 1, data.P[used][0]
    old_log_c = np.log(-np.expm1(-p_value / np.exp(theta[g_col])))
    new_g = np.log(GAMMA_BOUNDS[0])
    theta[0] += theta[3] * (np.log(-np.expm1(-p_value / np.exp(new_g))) - old_log_c)
    theta[g_col] = new_g
    return theta


def named_params(theta: np.ndarray, spec: CoupledSpec) -> list[dict[str, float]]:
    """θ -> one fit.law parameter mapping per γ group: A, B, E, alpha, beta, k[, gamma]."""
    theta = np.asarray(theta, dtype=float)
    base = {**chinchilla_params(theta, spec.tie), "k": float(theta[spec.k_col])}
    if not spec.precision:
        return [base]
    log_gammas = theta[spec.k_col + 1 : spec.k_col + 1 + spec.n_gamma]
    return [{**base, "gamma": float(np.exp(g))} for g in log_gammas]


def log_params(theta: np.ndarray, spec: CoupledSpec) -> dict[str, float]:
    """The raw optimisation variables, stored at full precision next to the derived parameters."""
    names = ["a", "b", "e", "alpha"] + ([] if spec.tie else ["beta"]) + ["k"]
    names += [f"g{i}" for i in range(spec.n_gamma)] if spec.precision else []
    return {n: float(v) for n, v in zip(names, np.asarray(theta, dtype=float), strict=True)}


def coupled_flags(params: dict[str, float]) -> list[str]:
    """``k_at_bound``: k ran to its box; the coupling is not identified (few sizes, or k and E trading)."""
    k = params["k"]
    for bound, side in zip(K_BOUNDS, ("lower", "upper"), strict=True):
        if abs(np.log(k / bound)) < 1e-3:
            return [
                f"k_at_bound: k={k:.4g} sits at the {side} bound {bound:g} (the coupling is not identified; "
                "more sizes, or compare with --law precision)"
            ]
    return []
