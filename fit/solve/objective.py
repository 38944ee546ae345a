"""The scaling-law objective in log space, its analytic gradient, and the parameter vector's layout.

    log L̂ = logsumexp(a − α·log N_eff,  b − β·log D,  e),   A = e^a, B = e^b, E = e^e
    log N_eff = log N + log(1 − exp(−(P − p0)/γ)),           γ = e^g

``p0`` is the optional exponent offset written as a bit shift (Kumar's ``exp(−P/γ + n)`` has n = p0/γ); the
shift form keeps the capacity positive with a plain box bound p0 < min P.  Parameter vector θ, in order:
``a, b, e, α, [β unless tied], g_1..g_G (precision law: one γ per row group), [p0 with the offset]``.

Reductions are written as ``(x * w).sum()``, never ``x @ w``: a matrix-vector product goes to a threaded BLAS
whose threads only spin on vectors this small (see ``fit.solve.optimize.BLAS_LIMIT``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LOSSES = ("huber", "mse", "mae", "asymmetric")
SPACES = ("log", "raw")
# The box of γ and of every exponent, for every law form (the precision law bounds log γ, the penalty form
# κ = 1/γ): one box, so the forms compare on the same footing and a γ "at its bound" means the same in each.
GAMMA_BOUNDS = (0.1, 50.0)
EXPONENT_BOUNDS = (0.0, 10.0)


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
    slot: np.ndarray | None = None  # (n,) int efficiency-law slot per row, -1 where eff = 1 (fit.solve.forms)
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
        self.slot = np.full(n, -1, dtype=int) if self.slot is None else np.asarray(self.slot, dtype=int)

    def with_weight(self, weight: np.ndarray) -> FitData:
        return FitData(self.N, self.D, self.L, self.P, self.group, weight, self.slot)


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


def log_terms(theta: np.ndarray, data: FitData, spec: LawSpec) -> tuple[np.ndarray, ...]:
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
    thetas: np.ndarray,
    data: FitData,
    spec: LawSpec,
    obj: Objective,
    log_n: np.ndarray | None = None,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Objective at many parameter vectors at once: thetas (S, k) -> (S,).  Used to screen the start grid
    and, with a row weight per vector (``weight`` (S, n); default ``data.weight``), by the batched bootstrap
    refits (fit.solve.batched).

    ``log_n`` (n,) is log N_eff when every θ shares the same γ and p0 (the screening loop passes it so the
    capacity factor is computed once per γ value, not once per start)."""
    if log_n is None:
        t1, t2, t3, _, _ = log_terms(thetas, data, spec)
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
        out = (value * (data.weight if weight is None else weight)).sum(axis=1)  # (S,)
    return np.where(np.isfinite(out), out, np.inf)


def loss_and_slope(lse: np.ndarray, data: FitData, obj: Objective) -> tuple[float, np.ndarray]:
    """(the objective at predicted log losses `lse` (n,), its derivative with respect to each lse (n,)):
    the part of every law's analytic gradient that does not depend on the law's terms."""
    if obj.space == "log":
        resid, dresid_dlse = data.logL - lse, -1.0
    else:
        pred = np.exp(lse)
        resid, dresid_dlse = data.L - pred, -pred
    value, slope = _rho(resid, obj)
    return float((value * data.weight).sum()), data.weight * slope * dresid_dlse


def objective_and_grad(theta: np.ndarray, data: FitData, spec: LawSpec, obj: Objective) -> tuple:
    """Objective and its analytic gradient at one θ (k,).

    Written on 1-D arrays with scalar parameters, not through ``log_terms``' (S, n) batch layout: L-BFGS-B
    calls this hundreds of times per fit on ~100 rows, where numpy's per-call overhead (broadcasts, column
    dicts) was most of the cost.  Same operations in the same order, so the same floats."""
    theta = np.asarray(theta, dtype=float)
    a, b, e, alpha = float(theta[0]), float(theta[1]), float(theta[2]), float(theta[3])
    i = 4 if spec.tie else 5
    beta = alpha if spec.tie else float(theta[4])
    log_n, u = data.logN, None
    if spec.precision:
        gamma_row = np.exp(theta[i : i + spec.n_gamma])[data.group]
        p0 = float(theta[i + spec.n_gamma]) if spec.offset else 0.0
        u = (data.P - p0) / gamma_row
        log_n = log_n + np.log(-np.expm1(-u))
    t1 = a - alpha * log_n
    t2 = b - beta * data.logD
    top = np.maximum(np.maximum(t1, t2), e)
    e1, e2, e3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(e - top)
    total = e1 + e2 + e3
    lse = top + np.log(total)
    w1, w2, w3 = e1 / total, e2 / total, e3 / total
    f, coef = loss_and_slope(lse, data, obj)  # coef: d f / d lse, per row
    c1, c2 = coef * w1, coef * w2  # d f / d t1, d f / d t2
    grad = [c1.sum(), c2.sum(), (coef * w3).sum()]
    d_alpha, d_beta = -(c1 * log_n).sum(), -(c2 * data.logD).sum()
    grad += [d_alpha + d_beta] if spec.tie else [d_alpha, d_beta]
    if spec.precision:
        # d t1 / d u = −α / expm1(u);  d u / d g = −u;  d u / d p0 = −1/γ
        dt1_du = -alpha / np.expm1(u)
        grad += list(np.bincount(data.group, weights=c1 * dt1_du * -u, minlength=spec.n_gamma))
        if spec.offset:
            grad.append(float((c1 * dt1_du * (-1.0 / gamma_row)).sum()))
    return f, np.asarray(grad, dtype=float)


def chinchilla_params(theta: np.ndarray, tie: bool) -> dict[str, float]:
    """A, B, E, alpha, beta from the layout every law shape starts with: a, b, e, α[, β] (β = α when tied)."""
    theta = np.asarray(theta, dtype=float)
    return {"A": float(np.exp(theta[0])), "B": float(np.exp(theta[1])), "E": float(np.exp(theta[2])),
            "alpha": float(theta[3]), "beta": float(theta[3] if tie else theta[4])}


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
