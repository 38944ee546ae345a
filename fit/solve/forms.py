"""Two further law forms and their log-space objective: per-bit efficiency, a QAT penalty that grows with D.

    efficiency:  L = A·(N·eff_P)^(−α) + B·D^(−β) + E,     eff_P = 1 at P ≥ 16, one free eff per other P
    penalty:     L = A·N^(−α) + B·D^(−β) + E + C·e^(−P/γ)·D^(δ_D)·N^(−δ_N)

Both are a log-sum-exp of terms, as in ``fit.solve.objective``.  θ = ``a, b, e, α, [β unless tied]`` (the
Chinchilla prefix, same layout as ``fit.solve.objective``) then
    efficiency: λ_1..λ_m, λ = log eff, one per *slot* (a distinct (γ group, P) with P < 16);
    penalty:    per group ``c, κ, δ_D, δ_N`` with κ = 1/γ and c the log penalty at the data's centre:
                log term = c − κ(P − P̄) + δ_D·(log D − log D̄) − δ_N·(log N − log N̄),  C = e^(c + κP̄ − ...).
κ instead of log γ keeps the log term linear in all four parameters.  Centring matters: with log D ≈ 18-23
an uncentred c moves almost exactly with δ_D·log D, and L-BFGS-B needed ~3000 iterations per bootstrap refit
(1.3 s) to crawl along that valley; centred, the parameters are nearly orthogonal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fit.law import EFF_PREFIX, FULL_P
from fit.solve.objective import (
    EXPONENT_BOUNDS,
    GAMMA_BOUNDS,
    FitData,
    Objective,
    _rho,
    chinchilla_params,
    loss_and_slope,
)

FORMS = ("efficiency", "penalty")
# eff may exceed 1 a little: a bound at exactly 1 would hide a quantized run that beats bf16 (noise, or a real
# effect); the flag eff_above_1 says so instead
LOG_EFF_BOUNDS = (float(np.log(1e-3)), float(np.log(2.0)))
KAPPA_BOUNDS = (1.0 / GAMMA_BOUNDS[1], 1.0 / GAMMA_BOUNDS[0])
DELTA_D_BOUNDS, DELTA_N_BOUNDS = (-1.0, 2.0), (-1.0, 3.0)
PENALTY_NAMES = ("c", "kappa", "delta_D", "delta_N")


@dataclass(frozen=True)
class FormSpec:
    """Shape of an efficiency- or penalty-law parameter vector."""

    form: str  # efficiency | penalty
    tie: bool = False
    slots: tuple[tuple[int, float], ...] = ()  # efficiency: (group, P) of each λ
    n_groups: int = 1  # parameter groups (formats of a shared fit); penalty: one (c, κ, δ_D, δ_N) each
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)  # penalty: (P̄, log N̄, log D̄) c is taken at

    @property
    def n_base(self) -> int:
        return 4 + (not self.tie)

    @property
    def n_params(self) -> int:
        return self.n_base + (len(self.slots) if self.form == "efficiency" else 4 * self.n_groups)

    @property
    def objective_fn(self):  # fit.solve.optimize.local_fit minimises this instead of fit.solve.objective's
        return objective_and_grad


def assign_slots(P: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, tuple[tuple[int, float], ...]]:
    """Per row its efficiency slot (−1 at P ≥ 16, where eff = 1), and the (group, P) of every slot."""
    keys = sorted({(int(g), float(np.round(p, 6))) for g, p in zip(group, P, strict=True) if p < FULL_P})
    index = {k: i for i, k in enumerate(keys)}
    slot = np.array(
        [
            -1 if p >= FULL_P else index[(int(g), float(np.round(p, 6)))]
            for g, p in zip(group, P, strict=True)
        ],
        dtype=int,
    )
    return slot, tuple(keys)


def bounds(spec: FormSpec) -> list[tuple[float | None, float | None]]:
    out: list[tuple[float | None, float | None]] = [(None, None)] * 3 + [EXPONENT_BOUNDS] * (spec.n_base - 3)
    if spec.form == "efficiency":
        return out + [LOG_EFF_BOUNDS] * len(spec.slots)
    return out + [(None, None), KAPPA_BOUNDS, DELTA_D_BOUNDS, DELTA_N_BOUNDS] * spec.n_groups


def _terms(theta: np.ndarray, data: FitData, spec: FormSpec) -> tuple[list[np.ndarray], np.ndarray]:
    """The log-space terms, each (S, n), and log N_eff (S, n) (log N for the penalty law)."""
    nb = spec.n_base
    a, b, e, alpha = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3], theta[:, 3:4]
    beta = alpha if spec.tie else theta[:, 4:5]
    log_n = np.broadcast_to(data.logN, (len(theta), len(data.logN)))
    if spec.form == "efficiency" and spec.slots:
        lam = theta[:, nb:][:, np.maximum(data.slot, 0)]
        log_n = log_n + np.where(data.slot >= 0, lam, 0.0)
    terms = [a - alpha * log_n, b - beta * data.logD[None, :], np.broadcast_to(e, log_n.shape)]
    if spec.form == "penalty":
        col = nb + 4 * data.group  # (n,) first penalty column of each row's group
        c, kappa, d_d, d_n = (theta[:, col + i] for i in range(4))
        p_bar, log_n_bar, log_d_bar = spec.centre
        terms.append(
            c
            - kappa * (data.P[None, :] - p_bar)
            + d_d * (data.logD[None, :] - log_d_bar)
            - d_n * (data.logN[None, :] - log_n_bar)
        )
    return terms, log_n


def _lse(terms: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    top = np.maximum.reduce(terms)
    exps = [np.exp(t - top) for t in terms]
    total = sum(exps)
    return top + np.log(total), [x / total for x in exps]


def row_values(thetas: np.ndarray, data: FitData, spec: FormSpec, obj: Objective) -> np.ndarray:
    """Weighted per-row loss at many θ: (S, k) -> (S, n); start screens sum it per slot or group."""
    terms, _ = _terms(thetas, data, spec)
    lse, _ = _lse(terms)
    resid = data.logL - lse if obj.space == "log" else data.L - np.exp(lse)
    value, _ = _rho(resid, obj)
    with np.errstate(invalid="ignore", over="ignore"):
        out = value * data.weight
    return np.where(np.isfinite(out), out, np.inf)


def objective_and_grad(theta: np.ndarray, data: FitData, spec: FormSpec, obj: Objective) -> tuple:
    """Objective and its analytic gradient at one θ (k,); same signature as fit.solve.objective's."""
    terms, log_n = _terms(theta[None, :], data, spec)
    lse, weights = _lse(terms)
    lse, log_n = lse[0], log_n[0]
    f, coef = loss_and_slope(lse, data, obj)  # coef: d f / d lse, per row
    c = [coef * w[0] for w in weights]  # d f / d term_k, per row
    grad = [c[0].sum(), c[1].sum(), c[2].sum()]
    d_alpha, d_beta = -(c[0] * log_n).sum(), -(c[1] * data.logD).sum()
    grad += [d_alpha + d_beta] if spec.tie else [d_alpha, d_beta]
    if spec.form == "efficiency":
        used = data.slot >= 0
        grad += list(np.bincount(data.slot[used], weights=-theta[3] * c[0][used], minlength=len(spec.slots)))
    else:
        g, G = data.group, spec.n_groups
        p_bar, log_n_bar, log_d_bar = spec.centre
        for feature in (np.ones_like(data.P), p_bar - data.P, data.logD - log_d_bar, log_n_bar - data.logN):
            grad.append(np.bincount(g, weights=c[3] * feature, minlength=G))
        # the four per-group columns are interleaved per group in θ: (c, κ, δ_D, δ_N) of group 0, then 1, ...
        per_group = np.stack(grad[spec.n_base :], axis=1).reshape(-1)
        grad = grad[: spec.n_base] + list(per_group)
    return f, np.asarray(grad, dtype=float)


def screen_extras(base: np.ndarray, data: FitData, spec: FormSpec, obj: Objective) -> np.ndarray:
    """A full θ from a Chinchilla prefix: each slot's λ (or group's penalty) picked from a grid.

    With the prefix fixed the objective is a sum over slots (groups), so every slot is screened on its own
    rows with one vectorised evaluation of the whole grid."""
    nb = spec.n_base
    if spec.form == "efficiency":
        grid = np.linspace(LOG_EFF_BOUNDS[0], LOG_EFF_BOUNDS[1], 61)[:, None].repeat(len(spec.slots), axis=1)
        owner, n_owner, width = data.slot, len(spec.slots), 1
    else:
        axes = np.meshgrid(
            np.arange(-14.0, 3.1, 1.0),  # log of the penalty at the centre: from ~1e-6 to ~20 nats
            [0.05, 0.15, 0.3, 0.6, 1.2],
            [0.0, 0.2, 0.4, 0.7, 1.0],
            [0.0, 0.2, 0.4, 0.7, 1.0],
            indexing="ij",
        )
        one = np.stack([x.reshape(-1) for x in axes], axis=1)  # (S, 4)
        grid = np.tile(one, (1, spec.n_groups))
        owner, n_owner, width = data.group, spec.n_groups, 4
    thetas = np.hstack([np.broadcast_to(base[:nb], (len(grid), nb)), grid])
    values = row_values(thetas, data, spec, obj)  # (S, n)
    theta = np.r_[base[:nb], grid[0]]
    for k in range(n_owner):
        rows = owner == k
        if not rows.any():
            continue
        best = int(np.argmin(values[:, rows].sum(axis=1)))
        theta[nb + width * k : nb + width * (k + 1)] = grid[best, width * k : width * (k + 1)]
    return theta


def named_params(theta: np.ndarray, spec: FormSpec) -> list[dict[str, float]]:
    """θ -> one parameter mapping per group (fit.law's keys: ``eff:<P>``, or C, gamma, delta_D, delta_N)."""
    theta = np.asarray(theta, dtype=float)
    base = chinchilla_params(theta, spec.tie)
    nb = spec.n_base
    if spec.form == "efficiency":
        out = [dict(base) for _ in range(spec.n_groups)]
        for i, (g, p) in enumerate(spec.slots):
            out[g][f"{EFF_PREFIX}{p:g}"] = float(np.exp(theta[nb + i]))
        return out
    out = []
    for g in range(spec.n_groups):
        c, kappa, d_d, d_n = theta[nb + 4 * g : nb + 4 * g + 4]
        p_bar, log_n_bar, log_d_bar = spec.centre
        log_c = c + kappa * p_bar - d_d * log_d_bar + d_n * log_n_bar
        out.append({**base, "C": float(np.exp(log_c)), "gamma": float(1.0 / kappa), "delta_D": float(d_d),
                    "delta_N": float(d_n)})  # fmt: skip
    return out


def log_params(theta: np.ndarray, spec: FormSpec) -> dict[str, float]:
    """The raw optimisation variables, stored at full precision next to the derived parameters."""
    theta = np.asarray(theta, dtype=float)
    names = ["a", "b", "e", "alpha"] + ([] if spec.tie else ["beta"])
    if spec.form == "efficiency":
        names += [f"log_eff{i}" for i in range(len(spec.slots))]
    else:
        names += [f"{n}{g}" for g in range(spec.n_groups) for n in PENALTY_NAMES]  # c at spec.centre
    return {n: float(v) for n, v in zip(names, theta, strict=True)}
