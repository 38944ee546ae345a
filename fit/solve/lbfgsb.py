"""L-BFGS-B without ``scipy.optimize.minimize``'s per-evaluation wrapper (issue 14 item 7).

A warm-started bootstrap refit makes 150-4000 objective evaluations (Huber δ = 1e-3 on log residuals is
almost L1: L-BFGS-B crawls along its kinks), each on ~60 rows.  Profiled, scipy's ``ScalarFunction`` and
``MemoizeJac`` bookkeeping around every evaluation cost about as much as the objective itself.  This drives
scipy's own L-BFGS-B routine (``scipy.optimize._lbfgsb.setulb``, the code ``minimize`` runs) with the loop of
``scipy.optimize._lbfgsb_py._minimize_lbfgsb`` and nothing else, so the iterates — and every bootstrap draw
— are the same floats as ``minimize(method="L-BFGS-B")`` (tests/test_fit_speed_equivalence.py checks it).

``setulb`` is private: on a scipy whose loop differs (another signature), :func:`minimize_lbfgsb` falls
back to ``minimize`` and says nothing — slower, same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

try:  # scipy >= 1.15: the C port of L-BFGS-B with this reverse-communication signature
    from scipy.optimize import _lbfgsb
    from scipy.optimize._lbfgsb_py import status_messages, task_messages
except ImportError:  # pragma: no cover - depends on the installed scipy
    _lbfgsb = None


@dataclass
class LbfgsbResult:
    """The fields of scipy's OptimizeResult that bitlaw reads."""

    x: np.ndarray
    fun: float
    nit: int
    nfev: int
    status: int  # 0 converged, 1 iteration/evaluation limit, 2 other (e.g. ABNORMAL line search)
    message: str


def _scipy(fun, x0, args, bounds, ftol, gtol, maxiter, maxcor, maxls) -> LbfgsbResult:
    res = minimize(
        fun,
        x0,
        args=args,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": ftol, "gtol": gtol, "maxiter": maxiter, "maxcor": maxcor, "maxls": maxls},
    )
    return LbfgsbResult(res.x, float(res.fun), int(res.nit), int(res.nfev), int(res.status), str(res.message))


def minimize_lbfgsb(
    fun: Callable[..., tuple[float, np.ndarray]],
    x0: np.ndarray,
    args: tuple[Any, ...],
    bounds: list[tuple[float | None, float | None]],
    ftol: float,
    gtol: float,
    maxiter: int,
    maxcor: int = 10,
    maxls: int = 20,
    maxfun: int = 15000,
) -> LbfgsbResult:
    """``minimize(fun, x0, args, jac=True, method="L-BFGS-B", bounds=bounds, options=...)``, leaner."""
    if _lbfgsb is None or not hasattr(_lbfgsb, "setulb"):
        return _scipy(fun, x0, args, bounds, ftol, gtol, maxiter, maxcor, maxls)
    n = len(x0)
    lower = np.array([-np.inf if lo is None else float(lo) for lo, _ in bounds])
    upper = np.array([np.inf if hi is None else float(hi) for _, hi in bounds])
    x = np.clip(np.asarray(x0, dtype=np.float64).ravel(), lower, upper)
    # nbd: 0 unbounded, 1 lower only, 2 both, 3 upper only (scipy's bounds_map)
    has_lo, has_hi = np.isfinite(lower), np.isfinite(upper)
    nbd = np.where(has_lo & has_hi, 2, np.where(has_lo, 1, np.where(has_hi, 3, 0))).astype(np.int32)
    low_bnd, upper_bnd = np.where(has_lo, lower, 0.0), np.where(has_hi, upper, 0.0)
    m = maxcor
    factr = ftol / np.finfo(float).eps
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task, ln_task = np.zeros(2, dtype=np.int32), np.zeros(2, dtype=np.int32)
    lsave, isave, dsave = np.zeros(4, np.int32), np.zeros(44, np.int32), np.zeros(29, np.float64)
    f, g = 0.0, np.zeros(n, np.float64)
    nfev = nit = 0  # (minimize counts fewer: its cache serves repeated points; only maxfun reads it)
    try:
        while True:
            _lbfgsb.setulb(
                m, x, low_bnd, upper_bnd, nbd, f, g, factr, gtol, wa, iwa, task, lsave, isave, dsave,
                maxls, ln_task,
            )
            if task[0] == 3:  # evaluate f, g at x
                f, g = _call(fun, x, args)
                nfev += 1
            elif task[0] == 1:  # a new iterate
                nit += 1
                if nit >= maxiter:
                    task[0], task[1] = 5, 504
                elif nfev > maxfun:
                    task[0], task[1] = 5, 502
            else:
                break
    except TypeError:  # pragma: no cover - a scipy whose setulb takes other arguments
        return _scipy(fun, x0, args, bounds, ftol, gtol, maxiter, maxcor, maxls)
    status = 0 if task[0] == 4 else 1 if (nfev > maxfun or nit >= maxiter) else 2
    message = status_messages[task[0]] + ": " + task_messages[task[1]]
    return LbfgsbResult(x.copy(), float(f), nit, nfev, status, message)


def _call(fun, x, args) -> tuple[float, np.ndarray]:
    # a copy, as ScalarFunction passes one: setulb updates x in place
    f, g = fun(x.copy(), *args)
    return float(f), np.asarray(g, dtype=np.float64).ravel()
