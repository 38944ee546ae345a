"""What a fitted law says about a candidate model, whatever its form (precision, efficiency, penalty,
coupled).

``recommend`` (and the plots built on it) need, per bit width, N_eff and the predicted loss for every
bootstrap draw.  The precision law has both for any P; the efficiency law only at the P values it fitted
(and at P >= 16, where eff = 1); the penalty law has a loss but no N_eff (its QAT cost is an added term that
depends on D, not a shrunk N): its N_eff is reported as N, and ranking is by loss.  The coupled law has the
precision law's N_eff and raises the N and D terms together to its k; one fitted without P cannot answer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fit.errors import InputError
from fit.law import EFF_PREFIX, FULL_P, P_TOLERANCE, capacity, law_of

ANSWERING_LAWS = ("precision", "efficiency", "penalty", "coupled")


def check_law(law: str, where: str, params: Mapping[str, object] | None = None) -> None:
    """``params`` (one fit's): a coupled law fitted on a table without P has no bits-per-weight term."""
    if law not in ANSWERING_LAWS or (law == "coupled" and params is not None and "gamma" not in params):
        raise InputError(
            f"{where}: recommend needs a law with a bits-per-weight term ({', '.join(ANSWERING_LAWS)}); this "
            f"one is {law!r}{' fitted without P' if law == 'coupled' else ''} — refit with "
            "`bitlaw fit DATA --law precision --by format`"
        )


def eff_key(params: Mapping[str, object], p: float) -> str | None:
    """The ``eff:<P>`` key of an efficiency-law fit for ``p``, or None where it has none."""
    for key in params:
        if key.startswith(EFF_PREFIX) and abs(float(key[len(EFF_PREFIX) :]) - p) <= P_TOLERANCE:
            return key
    return None


def fitted_ps(params: Mapping[str, object]) -> list[float]:
    return sorted(float(k[len(EFF_PREFIX) :]) for k in params if k.startswith(EFF_PREFIX))


def can_answer(params: Mapping[str, object], p: float) -> bool:
    """False only for an efficiency-law fit asked about a P below 16 it fitted no eff for."""
    return law_of(params) != "efficiency" or p >= FULL_P or eff_key(params, p) is not None


def check_answerable(params: Mapping[str, object], bits: list[int], ps: list[float]) -> None:
    """One line naming the bit widths an efficiency fit has no eff for (it cannot interpolate one)."""
    missing = [(b, p) for b, p in zip(bits, ps, strict=True) if not can_answer(params, p)]
    if missing:
        have = ", ".join(f"{q:g}" for q in fitted_ps(params)) or "none"
        wanted = ", ".join(f"{b} (P = {p:g})" for b, p in missing)
        raise InputError(
            f"--bits: the efficiency-law fit has no eff for bit width {wanted}; it fitted eff at P = {have} "
            "(and eff = 1 at P >= 16): pick --bits among those, or use a precision-law fit"
        )


def capacity_matrix(params: Mapping[str, np.ndarray], p: np.ndarray) -> np.ndarray:
    """N_eff/N for every (draw, row): draws on axis 0 (each value holds K), rows (P values) on axis 1."""
    law = law_of(params)
    first = np.asarray(next(iter(params.values())))
    K = len(first)
    if law == "precision" or (law == "coupled" and "gamma" in params):
        gamma = np.asarray(params["gamma"])[:, None]
        offset = np.asarray(params.get("offset", np.zeros(K)))[:, None]
        return capacity(p[None, :], gamma, offset)
    out = np.ones((K, len(p)))
    if law == "efficiency":
        for j, value in enumerate(p):
            if value < FULL_P:
                out[:, j] = np.asarray(params[eff_key(params, float(value))])
    return out  # penalty: no shrunk N


def loss_matrix(params: Mapping[str, np.ndarray], n: np.ndarray, p: np.ndarray, D: float) -> np.ndarray:
    """Loss for every (draw, row); an N_eff ≤ 0 (precision law with P below γ·offset) is an infinite loss."""
    get = {k: np.asarray(v, dtype=float)[:, None] for k, v in params.items()}
    n_eff = n[None, :] * capacity_matrix(params, p)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        terms = get["A"] * n_eff ** (-get["alpha"]) + get["B"] * D ** (-get["beta"])
        loss = terms ** get["k"] + get["E"] if law_of(params) == "coupled" else terms + get["E"]
        if law_of(params) == "penalty":
            qat = get["C"] * np.exp(-p[None, :] / get["gamma"]) * D ** get["delta_D"]
            loss = loss + qat * n[None, :] ** (-get["delta_N"])
    return np.where(n_eff > 0, loss, np.inf)


def n_eff_of(params: Mapping[str, float], n: float, p: float) -> float:
    """N_eff of one candidate at the point estimate (N itself for the penalty law)."""
    draws = {k: np.array([v], dtype=float) for k, v in params.items()}
    return float(n * capacity_matrix(draws, np.array([p], dtype=float))[0, 0])


def query_warnings(spans: Mapping[str, Mapping[str, tuple[float, float]]], fmt: str,
                   tokens: float, n_values: list[float]) -> list[str]:
    """``recommend``'s range check (fit.json's ``data_range`` of the fit serving ``fmt``): the tokens, and
    the largest and smallest candidate N, against the fitted D and N — the rule ``predict`` applies."""
    from fit.answer.caveats import range_warnings

    span = spans.get(fmt) or spans.get("all")
    if not span:
        return []
    out = range_warnings(dict(span), {"D": tokens if np.isfinite(tokens) else None})
    finite = [v for v in n_values if np.isfinite(v)]
    if finite:
        for value in sorted({min(finite), max(finite)}):
            out += [f"candidate model: {w}" for w in range_warnings(dict(span), {"N": value})]
    return out
