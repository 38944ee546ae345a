"""The scaling laws as plain functions of a parameter mapping (no fitting here).

    chinchilla:  L = A·N^(−α) + B·D^(−β) + E
    precision:   L = A·N_eff^(−α) + B·D^(−β) + E,   N_eff = N·(1 − exp(−P/γ + offset))

``offset`` is Kumar et al.'s exponent bias (Appendix K); 0 is 1-Bit Wonder's form.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

CHINCHILLA_PARAMS = ("A", "B", "E", "alpha", "beta")
PRECISION_PARAMS = (*CHINCHILLA_PARAMS, "gamma")


def capacity(P: np.ndarray | float, gamma: float, offset: float = 0.0) -> np.ndarray:
    """The saturating capacity factor N_eff/N = 1 − exp(−P/γ + offset), in (0, 1] for sane inputs."""
    return 1.0 - np.exp(-np.asarray(P, dtype=float) / gamma + offset)


def n_eff(N: np.ndarray | float, P: np.ndarray | float, gamma: float, offset: float = 0.0) -> np.ndarray:
    """Effective parameter count of N weights stored at P bits each."""
    return np.asarray(N, dtype=float) * capacity(P, gamma, offset)


def is_precision(params: Mapping[str, float]) -> bool:
    return "gamma" in params


def predict_loss(
    params: Mapping[str, float],
    N: np.ndarray | float,
    D: np.ndarray | float,
    P: np.ndarray | float | None = None,
) -> np.ndarray:
    """Predicted loss; ``P`` is required exactly when ``params`` hold a ``gamma``."""
    N = np.asarray(N, dtype=float)
    if is_precision(params):
        if P is None:
            raise ValueError("P (bits per weight) is required for a precision-law fit")
        N = n_eff(N, P, params["gamma"], params.get("offset", 0.0))
    D = np.asarray(D, dtype=float)
    return params["A"] * N ** (-params["alpha"]) + params["B"] * D ** (-params["beta"]) + params["E"]
