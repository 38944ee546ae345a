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


# ------------------------------------------------------------------------ identification on the objective
# A parameter is identified when the objective can tell its values apart, not when bootstrap refits happened
# not to move it (a refit warm-started at θ̂ stays near θ̂ on a flat objective: issue 28 item 1).  The test
# is a likelihood ratio.  Under the error model each objective stands for (``information`` above: Laplace
# for huber/mae/asymmetric, Gaussian for mse) with the scale profiled out, a rise of the summed objective from
# f* to f is a likelihood-ratio statistic LR = c·n·log(f/f*), c = 2 (Laplace) or 1 (Gaussian).  n counts the
# *independent units* among the fit's rows (trunks, else runs, as the bootstrap resamples them), not rows:
# branches of one trunk share its noise, and counting them as independent would inflate LR.  Every value whose
# LR stays below χ²₁(95 %) = 3.84 is inside the 95 % likelihood interval; a parameter whose LR stays below it
# over its whole fitter box (γ from 0.1 to 50, exponents 0 to 10) — or, for an unbounded log coefficient, over
# a factor COEFFICIENT_SPAN either side of the estimate — is not identified by these data.
LR_95 = 3.841  # χ²₁ 95 % quantile
COEFFICIENT_SPAN = float(np.log(1e3))  # A, B, E, C: scanned from 1/1000 to 1000 times the estimate
SCAN_POINTS = 9
LAW_NAMES = {"a": "A", "b": "B", "e": "E", "alpha": "alpha", "beta": "beta", "p0": "offset", "k": "k"}


def lr_scale(loss: str, n_units: int) -> float:
    """c·n of LR = c·n·log(f/f*) (see above)."""
    return (1.0 if loss == "mse" else 2.0) * max(int(n_units), 1)


def likelihood_ratio(values: np.ndarray, best: float, scale: float) -> np.ndarray:
    """LR of objective values against the optimum ``best`` (0 where a value is not above it)."""
    values = np.asarray(values, dtype=float)
    floor = max(float(best), 1e-300)  # an exact (noise-free) fit: any rise at all is decisive
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lr = scale * np.log(np.maximum(values, floor) / floor)
    return np.where(np.isfinite(lr), lr, np.inf)


def parameter_columns(log_names: list[str]) -> list[tuple[int, str, int | None]]:
    """(θ column, law-parameter name, group or None when shared) of every fitted variable, from the names
    fit.solve.staged.log_params_of gives them (g0.. → gamma, kappa0.. → gamma, log_eff0.. → eff, c0.. → C)."""
    out = []
    for col, raw in enumerate(log_names):
        if raw in LAW_NAMES:
            out.append((col, LAW_NAMES[raw], None))
        elif raw.startswith("log_eff"):
            out.append((col, "eff", None))  # the slot's group is resolved by the caller
        else:
            stem = raw.rstrip("0123456789")
            group = int(raw[len(stem) :])
            out.append((col, {"g": "gamma", "kappa": "gamma", "c": "C"}.get(stem, stem), group))
    return out


def scan_others_fixed(
    theta: np.ndarray, f_best: float, objective, box: list, scale: float
) -> np.ndarray:
    """Per θ column, the largest LR of the objective along that column alone (others held at θ̂), over the
    column's box or ±COEFFICIENT_SPAN where it has none.  The others fixed, the objective can only rise more
    than along the profile, so a column whose scan stays under LR_95 is certainly not identified."""
    out = np.empty(len(theta))
    for col, (lo, hi) in enumerate(box):
        lo = theta[col] - COEFFICIENT_SPAN if lo is None else lo
        hi = theta[col] + COEFFICIENT_SPAN if hi is None else hi
        if lo == hi:  # pinned (a two-stage prefix): not this fit's to identify
            out[col] = np.inf
            continue
        values = []
        for x in np.linspace(lo, hi, SCAN_POINTS):
            trial = np.array(theta, dtype=float)
            trial[col] = x
            values.append(objective(trial)[0])
        out[col] = float(np.max(likelihood_ratio(np.array(values), f_best, scale)))
    return out


def profile_interval(grid: list[float], values: list[float], f_best: float, scale: float) -> dict:
    """The γ profile's verdict: its largest LR over the box and the 95 % likelihood interval (log-linear
    interpolation between grid points; None on a side where the interval reaches the fitter's bound)."""
    g = np.log(np.asarray(grid, dtype=float))
    lr = likelihood_ratio(np.asarray(values, dtype=float), f_best, scale)
    inside = np.flatnonzero(lr < LR_95)
    out = {"max_lr": float(np.max(lr)), "method": "profile (others re-optimised)", "interval": [None, None]}
    if not len(inside):
        return out
    ends = []
    for i, step in ((inside[0], -1), (inside[-1], 1)):
        j = i + step
        if j < 0 or j >= len(g):
            ends.append(None)
            continue
        t = (LR_95 - lr[i]) / (lr[j] - lr[i]) if np.isfinite(lr[j]) else 0.0
        ends.append(float(np.exp(g[i] + t * (g[j] - g[i]))))
    out["interval"] = ends
    return out


def identification_flags(identification: dict[str, dict], params: dict[str, float]) -> list[str]:
    """``<name>_unidentified`` for every parameter the objective cannot tell apart over its range."""
    flags = []
    for name, verdict in identification.items():
        if verdict.get("identified", True):
            continue
        value = params.get(name)
        shown = f"{name}={value:.4g}" if isinstance(value, float) else name
        flags.append(
            f"{name}_unidentified: {shown}: over {verdict['range']} the objective rises by at most "
            f"{verdict['max_rise']:.2g} (relative; likelihood ratio {verdict['max_lr']:.2g} < {LR_95:g} over "
            f"{verdict['n_units']} independent units, {verdict['method']}): the data do not determine it, "
            "so its value and bootstrap CI are not a measurement"
        )
    return flags


def _range_text(name: str, raw: str, lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None:
        return f"{name} from 1/1000 to 1000 times its estimate"
    if raw.startswith("g"):
        return f"{name} from {np.exp(lo):.3g} to {np.exp(hi):.3g} (the fitter's bounds)"
    if raw.startswith("kappa"):
        return f"{name} from {1 / hi:.3g} to {1 / lo:.3g} (the fitter's bounds)"
    if raw.startswith("log_eff"):
        return f"{name} from {np.exp(lo):.3g} to {np.exp(hi):.3g} (the fitter's bounds)"
    return f"{name} from {lo:.3g} to {hi:.3g} (the fitter's bounds)"


def identify(
    theta: np.ndarray,
    f_best: float,
    data: FitData,
    spec,
    obj,
    n_units: int,
    n_groups: int,
    gamma_profiles: list[dict] | None = None,
) -> list[dict[str, dict]]:
    """Per γ group, {parameter: verdict} from the objective itself (see LR_95): every fitted variable scanned
    with the others fixed, and γ (precision law) judged on its profile, the others re-optimised, when given.
    A verdict: identified, max_lr, max_rise, n_units, method, range (and γ's likelihood interval)."""
    from fit.solve.optimize import objective_fn
    from fit.solve.staged import log_params_of, spec_bounds

    box = spec_bounds(spec, data)
    scale = lr_scale(obj.loss, n_units)
    raw_names = list(log_params_of(theta, spec))
    if spec.tie and len(raw_names) > len(theta):  # the precision law's log_params repeats a tied β = α
        raw_names.remove("beta")
    scans = scan_others_fixed(theta, f_best, lambda t: objective_fn(spec)(t, data, spec, obj), box, scale)
    out: list[dict[str, dict]] = [{} for _ in range(n_groups)]
    for (col, name, group), raw in zip(parameter_columns(raw_names), raw_names, strict=True):
        if not np.isfinite(scans[col]) and box[col][0] == box[col][1]:
            continue  # pinned by the two-stage fit: identified (or not) by stage 1
        if raw.startswith("log_eff"):
            group, p = spec.slots[int(raw[len("log_eff") :])]
            name = f"eff({p:g})"
        verdict = {"max_lr": float(scans[col]), "method": "scan (others fixed)"}
        if name == "gamma" and raw.startswith("g") and gamma_profiles:
            profile = gamma_profiles[group or 0]
            verdict = profile_interval(profile["gamma"], profile["objective"], f_best, scale)
        verdict["identified"] = bool(verdict["max_lr"] >= LR_95)
        verdict["max_rise"] = float(np.expm1(min(verdict["max_lr"] / scale, 700.0)))
        verdict["n_units"] = int(n_units)
        verdict["range"] = _range_text(name, raw, *box[col])
        for g in range(n_groups) if group is None else [group]:
            out[g][name] = verdict
    return out
