"""Flags about the design (which rows were run) and about the efficiency and penalty laws' own parameters.

``collinear_N_D``: when log D is (nearly) a linear function of log N over a fit's rows — a grid at a fixed
tokens-per-parameter ratio is the common case — N^(−α) and D^(−β) move together and the fit can trade one
term for the other (docs/method.md §6, flags).  The test is the residual of a least-squares line of log D on
log N: below COLLINEAR_RMS (~5 % in D) no D varies independently of N enough to separate the terms.
"""

from __future__ import annotations

import numpy as np

from fit.law import EFF_PREFIX, FULL_P
from fit.solve.forms import DELTA_D_BOUNDS, DELTA_N_BOUNDS, LOG_EFF_BOUNDS
from fit.solve.objective import GAMMA_BOUNDS, FitData

COLLINEAR_RMS = 0.05  # residual RMS of log D against a line in log N


def collinear_flag(data: FitData, rows: np.ndarray) -> list[str]:
    """``collinear_N_D`` when log D is (nearly) affine in log N over the rows with weight."""
    used = rows & (data.weight > 0)
    log_n, log_d = data.logN[used], data.logD[used]
    if len(np.unique(log_n)) < 2:
        return []
    slope, intercept = np.polyfit(log_n, log_d, 1)
    rms = float(np.sqrt(np.mean((log_d - (slope * log_n + intercept)) ** 2)))
    if rms >= COLLINEAR_RMS:
        return []
    ratio = np.exp(log_d - log_n)
    if abs(slope - 1.0) < 0.05:
        shape = f"D/N is ~constant ({np.min(ratio):.3g} to {np.max(ratio):.3g} tokens per parameter)"
    else:
        shape = f"D ~ N^{slope:.3g} (D/N from {np.min(ratio):.3g} to {np.max(ratio):.3g})"
    return [
        f"collinear_N_D: log D is a linear function of log N over these rows (residual {rms:.2g}): {shape}, "
        "so the N and D terms cannot be separated; run several D/N ratios per N"
    ]


def _near(value: float, bound: float) -> bool:
    return abs(value - bound) < 1e-3 * max(1.0, abs(bound))


def form_flags(law: str, params: dict[str, float], data: FitData, rows: np.ndarray) -> list[str]:
    """Flags of the efficiency and penalty laws (the Chinchilla part is flagged by fit.solve.pipeline)."""
    flags = []
    has_anchor = bool(np.any(data.P[rows & (data.weight > 0)] >= FULL_P))
    if law == "efficiency":
        if not has_anchor:
            flags.append(
                f"no_16bit_anchor: no row with P >= {FULL_P:g}; every eff trades off against A (eff = 1 only "
                "at 16 bits), so the effs are not identified"
            )
        for key, value in params.items():
            if not key.startswith(EFF_PREFIX):
                continue
            p = key[len(EFF_PREFIX) :]
            if any(_near(np.log(value), b) for b in LOG_EFF_BOUNDS):
                flags.append(f"eff_at_bound: eff at P={p} is {value:.4g}, at a bound of [1e-3, 2]")
            elif value > 1.0:
                flags.append(f"eff_above_1: eff at P={p} is {value:.4g}: these runs beat the 16-bit anchor")
    if law == "penalty":
        if not has_anchor:
            flags.append(
                f"no_16bit_anchor: no row with P >= {FULL_P:g}; the penalty term trades off against A, B, E"
            )
        for name, box in (("gamma", GAMMA_BOUNDS), ("delta_D", DELTA_D_BOUNDS), ("delta_N", DELTA_N_BOUNDS)):
            for bound in box:
                if _near(params[name], bound):
                    flags.append(f"{name}_at_bound: {name}={params[name]:.4g} sits at the bound {bound:g}")
        if len(np.unique(data.P[rows & (data.P < FULL_P)])) < 2:
            flags.append("few_distinct_P: fewer than 2 quantized P values; C and gamma are not separated")
    return flags


def information(loss: str, space: str, delta: float, residuals: np.ndarray, n_params: int) -> dict:
    """AIC and BIC of a fit under the error model its objective stands for: Laplace for mae and Huber (exact
    for mae; for Huber δ=1e-3 an approximation, since residuals of ~1e-3 straddle δ), Gaussian for mse.

    The scale is profiled out (b = mean|r|, σ² = mean r²), so −2·log-likelihood is 2n·log(2b) + 2n or
    n·log(2πσ²) + n.  Only fits of the same rows, loss and space are comparable, and then every form is
    scored with the same likelihood.  The asymmetric loss has no named error model: null, with a reason."""
    r = np.asarray(residuals, dtype=float)
    n, k = len(r), int(n_params)
    out: dict = {"n": n, "k": k, "space": space, "likelihood": None, "aic": None, "bic": None}
    if loss in ("mae", "huber"):
        scale = float(np.mean(np.abs(r)))
        minus_2ll = 2 * n * np.log(2 * scale) + 2 * n
        out["likelihood"] = "laplace"
    elif loss == "mse":
        minus_2ll = n * np.log(2 * np.pi * float(np.mean(r * r))) + n
        out["likelihood"] = "gaussian"
    else:
        out["reason"] = f"loss {loss} (delta {delta:g}) is not the likelihood of a named error model"
        return out
    out["aic"] = float(minus_2ll + 2 * k)
    out["bic"] = float(minus_2ll + k * np.log(n))
    return out
