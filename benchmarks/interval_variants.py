"""Forecast-interval variants scored on a backtest's predictions (figures, no assertions; method.md §14).

    .venv/bin/python -m bitlaw backtest TABLE --law chinchilla,coupled --workers 1 -o OUT
    .venv/bin/python benchmarks/interval_variants.py OUT/backtest.csv [OUT/backtest.json]

Every variant is scored as ``bitlaw backtest`` scores the stated interval (fit.answer.forecast.
evaluate_intervals): at origin k the model comes only from the inner predictions (origins j < k, sizes < k),
DEFAULT at the first origin; coverage of the held-out runs and mean half-width / mean |error|.  The one
exception is ``oracle``: each origin's 90 % envelope fitted on its own held-out runs, a bound no honest model
reaches, printed to show how much of the gap is the origin-to-origin scale.  Last, the distribution of
|log error| / r under the stated model, pooled and as each origin's 90th percentile.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fit.answer.forecast import DEFAULT, SLOPE_FLOOR, doublings_of  # noqa: E402

Rfun = Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]  # (inner, target) -> r per target row


def log_error(p: pd.DataFrame) -> np.ndarray:
    return np.abs(np.log(p["loss"].to_numpy(float) / p["predicted"].to_numpy(float)))


def envelope(x: np.ndarray, y: np.ndarray, q: float = 0.9, floor: float = SLOPE_FLOOR) -> tuple[float, float]:
    """fit.answer.forecast.fit_envelope with the quantile and the slope floor as arguments."""
    if floor > 0:
        slopes = floor * np.r_[1.0, np.geomspace(1.01, 100.0, 240)]
    else:
        slopes = np.r_[0.0, np.geomspace(1e-4, 1.5, 240)]
    resid = y[None, :] - slopes[:, None] * x[None, :]
    c0 = np.maximum(np.quantile(resid, q, axis=1), 0.0)
    u = resid - c0[:, None]
    best = int(np.argmin(np.where(u >= 0, q * u, (q - 1) * u).sum(axis=1)))
    return float(c0[best]), float(slopes[best])


def split_doublings(p: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(doublings of N factor, doublings of D/N outside the fitted range)."""
    xn = np.log2(np.maximum(p["N_factor"].to_numpy(float), 1.0))
    ratio = p["D_over_N"].to_numpy(float)
    lo, hi = p["D_over_N_min_fit"].to_numpy(float), p["D_over_N_max_fit"].to_numpy(float)
    return xn, np.maximum(0.0, np.maximum(np.log2(lo / ratio), np.log2(ratio / hi)))


def linear(q: float = 0.9, floor: float = SLOPE_FLOOR, recent: int | None = None,
           scale: Callable[[pd.DataFrame], np.ndarray] | None = None) -> Rfun:
    """r = c0 + c1·x/scale, fitted on the inner predictions (of the last ``recent`` origins only, if set)."""
    def r(inner: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        if recent is not None:
            inner = inner[inner["origin"] >= int(target["origin"].iloc[0]) - recent]
        def z(p: pd.DataFrame) -> np.ndarray:
            return doublings_of(p) / (1.0 if scale is None else scale(p))
        c0, c1 = envelope(z(inner), log_error(inner), q, floor)
        return c0 + c1 * z(target)
    return r


def dn_coefficient(inner: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    """x = doublings of N + a·doublings of D/N excess, ``a`` by the pinball loss on the inner predictions."""
    xn, xd = split_doublings(inner)
    y, best = log_error(inner), None
    for a in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0):
        c0, c1 = envelope(xn + a * xd, y)
        u = y - c0 - c1 * (xn + a * xd)
        loss = float(np.where(u >= 0, 0.9 * u, -0.1 * u).sum())
        if best is None or loss < best[0]:
            best = (loss, a, c0, c1)
    _, a, c0, c1 = best
    tn, td = split_doublings(target)
    return c0 + c1 * (tn + a * td)


def score(p: pd.DataFrame, rfun: Rfun, oracle: bool = False) -> tuple[float, float, list[np.ndarray]]:
    covered, half, error, ratios = [], [], [], []
    for k in sorted(set(p["origin"])):
        target = p[p["origin"] == k]
        inner = target if oracle else p[(p["origin"] < k) & (p["size"] < k)]
        r = rfun(inner, target) if len(inner) else DEFAULT["c0"] + DEFAULT["c1"] * doublings_of(target)
        covered.append(log_error(target) <= r)
        half.append(np.sinh(r))
        error.append(np.abs(target["error"].to_numpy(float)))
        ratios.append(log_error(target) / r)
    cov, hw, err = (np.concatenate(a) for a in (covered, half, error))
    return float(cov.mean()), float(hw.mean() / err.mean()), ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="bitlaw backtest's backtest.csv")
    parser.add_argument("json", type=Path, nargs="?", help="its backtest.json (default: beside the CSV)")
    args = parser.parse_args()
    n_min = json.loads((args.json or args.csv.with_name("backtest.json")).read_text())["sizes"][0]

    def span(beta: float, least: float = 0.0) -> Callable[[pd.DataFrame], np.ndarray]:
        """log2 of the fit's N span (N_max of the fit / the table's smallest N), at least ``least``, ^beta."""
        return lambda p: np.maximum(least, np.log2(p["N_max_fit"].to_numpy(float) / n_min)) ** beta

    variants: dict[str, Rfun] = {
        "stated (q 0.9, floor 0.015)": linear(), "q 0.85": linear(0.85), "q 0.8": linear(0.8),
        "floor 0.01": linear(floor=0.01), "no floor": linear(floor=0.0),
        "last 3 origins": linear(recent=3), "last 10 origins": linear(recent=10),
        "own D/N coefficient": dn_coefficient,
        "x / log2(span)^0.25": linear(scale=span(0.25)), "x / log2(span)^0.5": linear(scale=span(0.5)),
        "x / log2(span), floor 0.01": linear(floor=0.01, scale=span(1.0)),
        "x / log2(span)^0.25, q 0.95": linear(0.95, scale=span(0.25)),
        "x / max(1, log2(span))^0.25, q 0.95": linear(0.95, scale=span(0.25, 1.0)),
    }
    predictions = pd.read_csv(args.csv)
    for (law, name), p in predictions.groupby(["law", "fit"], sort=False):
        p = p.reset_index(drop=True)
        print(f"{law} {name}: {len(p)} held-out predictions")
        for label, rfun in variants.items():
            cov, ratio, _ = score(p, rfun)
            print(f"  {label:<36} {100 * cov:5.1f} % held, half-width {ratio:.2f}x mean |error|")
        cov, ratio, _ = score(p, linear(floor=0.0), oracle=True)
        print(f"  {'oracle (not honest)':<36} {100 * cov:5.1f} % held, half-width {ratio:.2f}x mean |error|")
        _, _, ratios = score(p, linear())
        z = np.concatenate(ratios)
        q90 = np.array([np.quantile(r, 0.9) for r in ratios if len(r) >= 20])
        print(f"  |log error| / r: median {np.median(z):.2f}, 90th pct {np.quantile(z, 0.9):.2f}; per origin "
              "(>= 20 runs) 90th pct min / quartiles / max " + " / ".join(
                  f"{v:.2f}" for v in np.quantile(q90, [0, 0.25, 0.5, 0.75, 1])))


if __name__ == "__main__":
    main()
