"""Forecast intervals that carry the error of extrapolating (docs/method.md §14).

A bootstrap interval says how well the fitted rows pin the parameters; it says nothing about how wrong the
law's *form* is beyond them, and that error grows with the distance of the question from the data (issue 26:
0 of 5 demo contenders inside their bootstrap interval at 2x beyond the grid).  The error model measures that
growth on the fit's own table, by a rolling-origin backtest in N (fit.study.backtest): every prediction of a
larger size from the smaller ones gives one |log(predicted / measured)| at one extrapolation distance

    x = log2(N / N_max of the fit) + log2(how far D/N lies outside the fitted D/N range)  (doublings, >= 0)

and the model is the upper envelope ``r(x) = c0 + c1·x``: a 90 % quantile regression of |log error| on x.
Linear in doublings because that is how |error| grows on the public ladders (Epoch's 40 origins: about
1.5 percentage points per doubling, method.md §13), and a straight line extrapolates that growth without
inventing curvature from a few origins.  c1 is held >= SLOPE_FLOOR: an internal backtest of few sizes sees
only small factors and cannot measure the growth, and a flat envelope would claim that a forecast 100x
beyond the data is as good as one 1.5x beyond.  A D/N outside the fitted range counts as extra doublings
because errors there are 3-4x larger on both public ladders (method.md §13).
Other envelopes (a lower quantile or floor, recent origins only, a D/N coefficient of its own, the distance
relative to the fitted span) were scored as this one is, by benchmarks/interval_variants.py; the one that
held >= 90 % on both public ladders with a narrower interval was picked after scoring them, and is not
adopted (method.md §14).

With fewer than 4 sizes there is no internal backtest (a backtest fits on 3 at least and predicts a 4th):
the model is DEFAULT, the 90 % envelope of the 3-size origins of the public ladders' backtests, and
``basis`` says so.

The forecast interval widens the bootstrap interval (or the point, without a bootstrap) by r in log space:
``[lo·exp(−r), hi·exp(+r)]``.  Widening in log space keeps it positive and symmetric in relative error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

QUANTILE = 0.9  # the envelope the regression fits: about 9 in 10 held-out predictions inside
SLOPE_FLOOR = 0.015  # |log error| per doubling, at least (module docstring)
# The 3-size origins of `bitlaw backtest` (chinchilla and coupled) on Epoch's 240 points and Gemstones: the
# 90th percentile of |log error| is 0.016 / 0.029 / 0.06 / 0.10 / 0.13 / 0.18 / 0.27 at 0.5 / 1.5 / 2.5 /
# 3.5 / 4.5 / 5.5 / 7 doublings (Epoch) and 0.05 / 0.16 / 0.21 / 0.24 at 0.5 / 2.5 / 3.5 / 4.5 (Gemstones,
# where each 3-size fit also forecasts outside its D/N range); 0.03 + 0.04·x lies at or above both once the
# D/N term is counted (method.md §14 lists the figures).
DEFAULT = {"c0": 0.03, "c1": 0.04}
DEFAULT_BASIS = ("default for fits of < 4 sizes: |log error| <= 0.03 + 0.04 per doubling, the 90 % envelope "
                 "of 3-size fits in the Epoch and Gemstones backtests")
MIN_INTERNAL_SIZES = 4
# signed slopes of the bias line tried by fit_bias (log error per doubling): 0, then +-1e-4 .. +-0.2 by
# size, so that a tie (predictions at one distance only cannot tell a slope) goes to the flattest line
BIAS_SLOPES = np.r_[0.0, np.stack([np.geomspace(1e-4, 0.2, 120), -np.geomspace(1e-4, 0.2, 120)], 1).ravel()]


def distance(N_factor: Any, D_over_N: Any, dn_range: tuple[float, float] | None) -> np.ndarray:
    """Doublings beyond the data: log2 of the N factor (0 inside) plus log2 of the factor by which D/N lies
    outside the fitted D/N range (0 inside, or without a range)."""
    x = np.log2(np.maximum(np.asarray(N_factor, dtype=float), 1.0))
    if dn_range is not None:
        ratio = np.asarray(D_over_N, dtype=float)
        x = x + np.maximum(0.0, np.maximum(np.log2(dn_range[0] / ratio), np.log2(ratio / dn_range[1])))
    return x


def default_model(why: str | None = None) -> dict[str, Any]:
    basis = DEFAULT_BASIS if why is None else f"{DEFAULT_BASIS} ({why})"
    return {"form": "c0 + c1 * doublings", **DEFAULT, "quantile": QUANTILE, "basis": basis}


def fit_envelope(x: np.ndarray, abs_log_error: np.ndarray) -> tuple[float, float]:
    """(c0, c1) of the QUANTILE regression of |log error| on x, c0 >= 0, c1 >= SLOPE_FLOOR: the pinball
    loss minimised over a fine grid of slopes, each with its exact best intercept (the QUANTILE-quantile
    of the residuals y − c1·x, or 0 below it: the loss is convex in c0).  A linear program gives the same
    line but took seconds on Epoch's 4,700 predictions per origin; this takes milliseconds."""
    x, y = np.asarray(x, dtype=float), np.asarray(abs_log_error, dtype=float)
    slopes = SLOPE_FLOOR * np.r_[1.0, np.geomspace(1.01, 100.0, 240)]
    resid = y[None, :] - slopes[:, None] * x[None, :]
    c0 = np.maximum(np.quantile(resid, QUANTILE, axis=1), 0.0)
    u = resid - c0[:, None]
    pinball = np.where(u >= 0, QUANTILE * u, (QUANTILE - 1) * u).sum(axis=1)
    best = int(np.argmin(pinball))
    return float(c0[best]), float(slopes[best])


def model_from_predictions(p: Any, basis: str) -> dict[str, Any]:
    """The error model from backtest predictions (columns N_factor, D_over_N, D_over_N_min_fit,
    D_over_N_max_fit, predicted, loss)."""
    x = doublings_of(p)
    err = np.abs(np.log(p["predicted"].to_numpy(dtype=float) / p["loss"].to_numpy(dtype=float)))
    c0, c1 = fit_envelope(x, err)
    return {"form": "c0 + c1 * doublings", "c0": c0, "c1": c1, "quantile": QUANTILE, "basis": basis,
            "n_predictions": int(len(p)), "origins": sorted(int(k) for k in set(p["origin"])),
            "doublings_seen": [float(x.min()), float(x.max())]}


def doublings_of(p: Any) -> np.ndarray:
    """Each backtest prediction's distance from the data of the fit that made it."""
    x = np.log2(np.maximum(p["N_factor"].to_numpy(dtype=float), 1.0))
    ratio = p["D_over_N"].to_numpy(dtype=float)
    lo, hi = p["D_over_N_min_fit"].to_numpy(dtype=float), p["D_over_N_max_fit"].to_numpy(dtype=float)
    return x + np.maximum(0.0, np.maximum(np.log2(lo / ratio), np.log2(ratio / hi)))


def relative_error(model: dict[str, Any], x: Any) -> np.ndarray:
    return float(model["c0"]) + float(model["c1"]) * np.asarray(x, dtype=float)


def model_of(entry: dict[str, Any]) -> dict[str, Any]:
    """A fit entry's stored model, or the default for a fit.json written before models were stored."""
    model = entry.get("forecast_error")
    if isinstance(model, dict) and all(isinstance(model.get(k), int | float) for k in ("c0", "c1")):
        return model
    return default_model("fit.json stores no error model; refit to measure one")


def forecast(entry: dict[str, Any], loss: float, ci: tuple[float, float] | None, N: float,
             D: float) -> dict[str, Any]:
    """The forecast block of an answer: the interval, its relative error, and the question against the
    data's range (predict --json's "forecast")."""
    span = entry.get("data_range") or {}
    n_max = float(span["N"][1]) if "N" in span else math.nan
    dn = span.get("D_over_N")
    dn_range = (float(dn[0]), float(dn[1])) if dn else None
    factor = N / n_max if math.isfinite(n_max) else math.nan
    model = model_of(entry)
    x = float(distance(factor if math.isfinite(factor) else 1.0, D / N, dn_range))
    r = float(relative_error(model, x))
    lo, hi = ci if ci is not None else (loss, loss)
    return {"interval": [float(lo) * math.exp(-r), float(hi) * math.exp(r)], "relative_error": r,
            "N_factor": factor, "D_over_N": D / N, "D_over_N_range": list(dn_range) if dn_range else None,
            "doublings": x, "basis": model["basis"]}


def forecast_nats(entry: dict[str, Any], loss: float, N: float, D: float) -> float:
    """The forecast error of one prediction in nats: loss·(exp(r) − 1), the interval's upper widening."""
    f = forecast(entry, loss, None, N, D)
    return loss * math.expm1(f["relative_error"])


def fit_bias(x: np.ndarray, log_ratio: np.ndarray) -> tuple[float, float]:
    """(b0, b1) of the median regression of the signed log(measured / predicted) on x (least absolute
    deviations: robust to the few far misses of unidentified small fits), over BIAS_SLOPES."""
    x, y = np.asarray(x, dtype=float), np.asarray(log_ratio, dtype=float)
    resid = y[None, :] - BIAS_SLOPES[:, None] * x[None, :]
    b0 = np.median(resid, axis=1)
    loss = np.abs(resid - b0[:, None]).sum(axis=1)
    best = int(np.flatnonzero(loss <= loss.min() * (1 + 1e-9) + 1e-12)[0])
    return float(b0[best]), float(BIAS_SLOPES[best])


def evaluate_intervals(p: Any, centred: bool = False) -> dict[str, Any] | None:
    """How the intervals each origin's fit would state hold on its held-out runs (``bitlaw backtest``).

    ``p``: one (law, fit)'s backtest predictions with a ``size`` column (0 = smallest).  The fit at origin k
    (sizes 0..k−1) has its own internal backtest: the predictions of the origins j < k for sizes < k, made
    by exactly the fits a backtest of its k sizes would make.  Its error model comes from those alone, or is
    DEFAULT when there are none (the first origin), so no held-out run tunes the interval that is scored on
    it.  The scored interval is the point widened by r (no bootstrap at the origins: a bootstrap interval
    only widens it further, so coverage here is a lower bound and the half-width an underestimate).

    ``centred``: score the signed alternative instead (method.md §14, not what fits state): the interval
    ``[point·exp(b − r), point·exp(b + r)]`` around a bias line b = b0 + b1·x, the median regression of the
    same inner predictions' signed log(measured / predicted), with r the envelope of |log error − b|.  No
    bias at the first origin.  Its half-width relative to the point is exp(b)·sinh(r)."""
    if not len(p):
        return None
    covered, half, error, per_origin = [], [], [], []
    for k in sorted(set(p["origin"])):
        target = p[p["origin"] == k]
        inner = p[(p["origin"] < k) & (p["size"] < k)]
        b0 = b1 = 0.0
        if centred and len(inner):
            b0, b1 = fit_bias(doublings_of(inner), _log_ratio(inner))
            x_in = doublings_of(inner)
            c0, c1 = fit_envelope(x_in, np.abs(_log_ratio(inner) - (b0 + b1 * x_in)))
            model = {"c0": c0, "c1": c1}
        else:
            model = model_from_predictions(inner, "internal") if len(inner) else default_model()
        x = doublings_of(target)
        r, b = relative_error(model, x), b0 + b1 * x
        covered.append(np.abs(_log_ratio(target) - b) <= r)
        half.append(np.exp(b) * np.sinh(r))  # (exp(b + r) − exp(b − r)) / 2: relative to the point
        error.append(np.abs(target["error"].to_numpy(dtype=float)))
        per_origin.append({"origin": int(k), "basis": "default" if not len(inner) else "internal",
                           "c0": model["c0"], "c1": model["c1"], "n": int(len(target)),
                           "coverage": float(covered[-1].mean()),
                           **({"b0": b0, "b1": b1} if centred else {})})
    cov, hw, err = (np.concatenate(a) for a in (covered, half, error))
    return {"n": int(len(cov)), "coverage": float(cov.mean()), "mean_half_width": float(hw.mean()),
            "mean_abs_error": float(err.mean()), "half_width_over_error": float(hw.mean() / err.mean())
            if err.mean() > 0 else None, "quantile": QUANTILE, "centre": "bias line" if centred else "point",
            "per_origin": per_origin}


def _log_ratio(p: Any) -> np.ndarray:
    """Signed log(measured / predicted): positive where the law promised a lower loss than the run reached."""
    return np.log(p["loss"].to_numpy(dtype=float) / p["predicted"].to_numpy(dtype=float))
