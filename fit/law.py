"""The scaling laws as plain functions of a parameter mapping (no fitting here).

    chinchilla:  L = A·N^(−α) + B·D^(−β) + E
    precision:   L = A·N_eff^(−α) + B·D^(−β) + E,   N_eff = N·(1 − exp(−P/γ + offset))
    efficiency:  L = A·(N·eff_P)^(−α) + B·D^(−β) + E,   eff_P = 1 for P ≥ 16, else one value per fitted P
    penalty:     L = A·N^(−α) + B·D^(−β) + E + C·e^(−P/γ)·D^(δ_D)·N^(−δ_N)
    coupled:     L = (A·N_eff^(−α) + B·D^(−β))^k + E,   N_eff as the precision law's; N itself without γ

``offset`` is Kumar et al.'s exponent bias (Appendix K); 0 is 1-Bit Wonder's form.  An efficiency law's
mapping holds one key ``"eff:<P>"`` per fitted P (flat keys, so bootstrap draws stay plain arrays).  A
coupled mapping has ``k``; with ``gamma`` it needs P (k = 1 is the precision law), without it is the
Chinchilla analogue (k = 1 is Chinchilla's law).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fit.errors import InputError

CHINCHILLA_PARAMS = ("A", "B", "E", "alpha", "beta")
PRECISION_PARAMS = (*CHINCHILLA_PARAMS, "gamma")
PENALTY_PARAMS = (*CHINCHILLA_PARAMS, "C", "gamma", "delta_D", "delta_N")
COUPLED_PARAMS = (*PRECISION_PARAMS, "k")  # gamma only where the fitted rows had P
LAWS = ("chinchilla", "precision", "efficiency", "penalty", "coupled")
FULL_P = 16.0  # the efficiency law's eff is 1 here and above: bf16 is the reference, not a free parameter
EFF_PREFIX = "eff:"
P_TOLERANCE = 1e-6  # a P matches a fitted one within this (P_w values are n + 0.25, exact in binary)


def capacity(P: np.ndarray | float, gamma: float, offset: float = 0.0) -> np.ndarray:
    """The saturating capacity factor N_eff/N = 1 − exp(−P/γ + offset), in (0, 1] for sane inputs."""
    return 1.0 - np.exp(-np.asarray(P, dtype=float) / gamma + offset)


def n_eff(N: np.ndarray | float, P: np.ndarray | float, gamma: float, offset: float = 0.0) -> np.ndarray:
    """Effective parameter count of N weights stored at P bits each."""
    return np.asarray(N, dtype=float) * capacity(P, gamma, offset)


def law_of(params: Mapping[str, float]) -> str:
    """Which law a parameter mapping describes (its keys say it)."""
    if "delta_D" in params:
        return "penalty"
    if any(k.startswith(EFF_PREFIX) for k in params):
        return "efficiency"
    if "k" in params:
        return "coupled"
    return "precision" if "gamma" in params else "chinchilla"


def needs_p(params: Mapping[str, float]) -> bool:
    """Whether a prediction from this mapping needs P: every law with a bits-per-weight term (a coupled law
    fitted without P has none)."""
    law = law_of(params)
    return law != "chinchilla" and (law != "coupled" or "gamma" in params)


def is_precision(params: Mapping[str, float]) -> bool:
    return law_of(params) == "precision"


def eff_table(params: Mapping[str, float]) -> dict[float, float]:
    """The efficiency law's {P: eff}."""
    return {float(k[len(EFF_PREFIX) :]): float(v) for k, v in params.items() if k.startswith(EFF_PREFIX)}


def efficiency(params: Mapping[str, float], P: np.ndarray | float) -> np.ndarray:
    """eff(P) of an efficiency-law fit; a P below 16 that the fit has no eff for is an InputError."""
    table = eff_table(params)
    P = np.asarray(P, dtype=float)
    out = np.ones(P.shape)
    flat_p, flat_out = P.reshape(-1), out.reshape(-1)
    for i, p in enumerate(flat_p):
        if p >= FULL_P:
            continue
        match = [v for q, v in table.items() if abs(q - p) <= P_TOLERANCE]
        if not match:
            allowed = ", ".join(f"{q:g}" for q in sorted(table))
            raise InputError(
                f"--P: {p:g} is not a bit width this efficiency-law fit has an eff for; allowed: {allowed}, "
                f"or >= {FULL_P:g}"
            )
        flat_out[i] = match[0]
    return out


def penalty(params: Mapping[str, float], N: np.ndarray, D: np.ndarray, P: np.ndarray) -> np.ndarray:
    """The penalty law's QAT term C·e^(−P/γ)·D^(δ_D)·N^(−δ_N)."""
    return (
        params["C"]
        * np.exp(-np.asarray(P, dtype=float) / params["gamma"])
        * D ** params["delta_D"]
        * N ** (-params["delta_N"])
    )


def predict_loss(
    params: Mapping[str, float],
    N: np.ndarray | float,
    D: np.ndarray | float,
    P: np.ndarray | float | None = None,
) -> np.ndarray:
    """Predicted loss; ``P`` is required exactly when the law has a bits-per-weight term."""
    law = law_of(params)
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    if needs_p(params) and P is None:
        raise ValueError(f"P (bits per weight) is required for a {law}-law fit")
    if law == "precision" or (law == "coupled" and "gamma" in params):
        N = n_eff(N, P, params["gamma"], params.get("offset", 0.0))
    elif law == "efficiency":
        N = N * efficiency(params, P)
    terms = params["A"] * N ** (-params["alpha"]) + params["B"] * D ** (-params["beta"])
    if law == "coupled":
        return terms ** params["k"] + params["E"]
    loss = terms + params["E"]
    if law == "penalty":
        loss = loss + penalty(params, N, D, P)
    return loss
