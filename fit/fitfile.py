"""fit.json (a contract, method.md §6): its writer, and its reader (parameters, predictions, bootstrap draws).

Layout: ``{"law", "loss", "delta", "columns", "fits": {FORMAT|"all": {A, B, E, alpha, beta[, gamma, offset]
[, C, delta_D, delta_N][, "eff": {"<P>": eff}], objective, ..., "flags", "bootstrap": {param: [lo, hi]},
"bootstrap_samples": {param: [K values]}}}, "extrapolation": {...}}``.  ``fits["all"]`` serves every format.
An efficiency fit's effs are bootstrapped under the flat names ``eff:<P>`` (``eff_ci`` repeats them by P).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fit.errors import InputError
from fit.law import CHINCHILLA_PARAMS, EFF_PREFIX, law_of, needs_p, predict_loss
from sweep import contract

LAW_PARAM_KEYS = (*CHINCHILLA_PARAMS, "gamma", "offset", "C", "delta_D", "delta_N", "k")  # k: coupled law


@dataclass(frozen=True)
class FitFile:
    path: Path
    data: dict[str, Any]

    @property
    def law(self) -> str:
        return str(self.data.get("law", "chinchilla"))

    @property
    def formats(self) -> list[str]:
        return list(self.data["fits"])

    def entry(self, fmt: str | None = None) -> dict[str, Any]:
        """The fit entry for ``fmt``; ``fits['all']`` (or a lone entry) when ``fmt`` is None."""
        fits = self.data["fits"]
        if fmt is not None and fmt in fits:
            return fits[fmt]
        if "all" in fits:
            return fits["all"]
        if fmt is None and len(fits) == 1:
            return next(iter(fits.values()))
        allowed = ", ".join(fits)
        wanted = "a format" if fmt is None else f"format {fmt!r}"
        raise InputError(f"--format: {self.path} has no fit for {wanted}; allowed: {allowed}")

    def params(self, fmt: str | None = None) -> dict[str, float]:
        entry = self.entry(fmt)
        params = {k: float(entry[k]) for k in LAW_PARAM_KEYS if k in entry}
        params.update({f"{EFF_PREFIX}{p}": float(v) for p, v in (entry.get("eff") or {}).items()})
        return params

    def predict(self, N: Any, D: Any, P: Any = None, fmt: str | None = None) -> np.ndarray:
        params = self.params(fmt)
        _check_p(params, P)
        return predict_loss(params, N, D, P)

    def bootstrap_samples(self, fmt: str | None = None) -> dict[str, np.ndarray] | None:
        """Per-parameter arrays of the bootstrap refits (aligned by resample), or None if not bootstrapped."""
        samples = self.entry(fmt).get("bootstrap_samples")
        if not samples:
            return None
        return {k: np.asarray(v, dtype=float) for k, v in samples.items()}


def prediction_interval(
    fit: FitFile, N: Any, D: Any, P: Any = None, fmt: str | None = None, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Percentile interval of the predicted loss over the bootstrap draws: (lo, hi, n_draws), or None when the
    fit has no bootstrap.  Each draw predicts with its own parameter set (draws are aligned by resample)."""
    samples = fit.bootstrap_samples(fmt)
    if not samples:
        return None
    _check_p(fit.params(fmt), P)
    n_draws = len(next(iter(samples.values())))
    draws = np.stack([predict_loss({k: v[i] for k, v in samples.items()}, N, D, P) for i in range(n_draws)])
    finite = np.isfinite(draws).all(axis=tuple(range(1, draws.ndim)))
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(draws[finite], [tail, 100 - tail], axis=0)
    return lo, hi, int(finite.sum())


def _check_p(params: dict[str, float], P: Any) -> None:
    if needs_p(params) and P is None:
        raise InputError(f"--P: a {law_of(params)}-law fit needs the bits per weight (e.g. --P 2.25)")


def load_fit(path: str | Path) -> FitFile:
    """Load and minimally validate a fit.json; every problem is one InputError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"fit file {path} does not exist (make one with `bitlaw fit DATA -o fit.json`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"fit file {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    fits = data.get("fits") if isinstance(data, dict) else None
    if not isinstance(fits, dict) or not fits:
        raise InputError(f"fit file {path} has no 'fits' object; is it a bitlaw fit.json?")
    for name, entry in fits.items():
        missing = [k for k in CHINCHILLA_PARAMS if k not in entry]
        if missing:
            raise InputError(f"fit file {path}: fit {name!r} lacks parameters {', '.join(missing)}")
    return FitFile(path=path, data=data)


# ----------------------------------------------------------------------------- writing
def write_fit(path: str | Path, document: dict[str, Any]) -> None:
    """Write fit.json atomically (contract.atomic_write_json) as strict JSON: NaN/inf become null, since
    jq, JavaScript and other readers reject NaN."""
    contract.atomic_write_json(path, finite_or_null(document), indent=1, allow_nan=False)


def finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def sha256_of(path: str | Path) -> str:
    """The data file's digest, recorded in fit.json so a fit names exactly what it was fitted to."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def infer_n_convention(frame: Any) -> str | None:
    """Which count column N equals (a `bitlaw gather` table writes N = N_quant by default), else None."""
    for name, column in (("quant", "N_quant"), ("nonembed", "N_nonembed"), ("total", "N_total")):
        if column in frame and (frame[column].to_numpy(dtype=float) == frame["N"].to_numpy()).all():
            return name
    return None
