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

from fit.data.where import parse_where
from fit.errors import InputError
from fit.law import (
    CHINCHILLA_PARAMS,
    EFF_PREFIX,
    LAWS,
    PENALTY_PARAMS,
    PRECISION_PARAMS,
    law_of,
    needs_p,
    predict_loss,
)
from fit.units import format_name
from sweep import contract

LAW_PARAM_KEYS = (*CHINCHILLA_PARAMS, "gamma", "offset", "C", "delta_D", "delta_N", "k")  # k: coupled law
LAW_PARAMS = {"chinchilla": CHINCHILLA_PARAMS, "precision": PRECISION_PARAMS, "efficiency": CHINCHILLA_PARAMS,
              "penalty": PENALTY_PARAMS, "coupled": (*CHINCHILLA_PARAMS, "k")}  # fmt: skip
# (efficiency also needs its "eff" table; a coupled fit has gamma too where its table had P)
# (lower bound, bound allowed) per parameter, None: any finite value.  A, B, E, C are exp() of a fitted log,
# the exponents are fitted in [0, 10], γ > 0 divides P (γ <= 0 gave nan/inf answers with exit 0).
PARAM_DOMAINS: dict[str, tuple[float | None, bool]] = {
    "A": (0.0, True), "B": (0.0, True), "E": (0.0, True), "C": (0.0, True), "alpha": (0.0, True),
    "beta": (0.0, True), "gamma": (0.0, False), "offset": (None, True), "delta_D": (None, True),
    "delta_N": (None, True), "k": (0.0, False),
}  # fmt: skip


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
        fmt = None if fmt is None else format_name(fmt)
        if fmt is not None and fmt in fits:
            return fits[fmt]
        if "all" in fits:
            return fits["all"]
        if fmt is None and len(fits) == 1:
            return next(iter(fits.values()))
        allowed = ", ".join(fits)
        if fmt is None:  # a per-format fit.json: say the option is needed, not that a format is missing
            raise InputError(f"--format: required, {self.path} holds one fit per format; allowed: {allowed}")
        raise InputError(f"--format: {self.path} has no fit for format {fmt!r}; allowed: {allowed}")

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
    """Load and validate a fit.json; every problem is one InputError line naming the file (and the fit and
    the key).  A hand-edited value must not turn into a nan or inf answer with exit 0, and the stored
    ``--where`` must parse (it is data: fit.data.where never runs it)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"fit file {path} does not exist (make one with `bitlaw fit DATA -o fit.json`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" ({err.msg} at line {err.lineno})" if isinstance(err, json.JSONDecodeError) else ""
        raise InputError(f"fit file {path} is not valid JSON{where}") from None
    fits = data.get("fits") if isinstance(data, dict) else None
    if not isinstance(fits, dict) or not fits:
        raise InputError(f"fit file {path} has no 'fits' object; is it a bitlaw fit.json?")
    law = data.get("law", "chinchilla")
    if law not in LAWS:
        raise InputError(f"fit file {path}: key 'law' is {law!r}; allowed: {', '.join(LAWS)}")
    data["fits"] = _format_keys(path, fits)
    for name, entry in data["fits"].items():
        _check_entry(path, name, entry, law)
    stored = (data.get("data") or {}).get("where") if isinstance(data.get("data"), dict) else None
    if stored is not None:
        parse_where(stored, f"fit file {path}: key 'data.where'")
    return FitFile(path=path, data=data)


def _format_keys(path: Path, fits: dict[str, Any]) -> dict[str, Any]:
    """The fits keyed by format name as bitlaw spells them (lower case, fit.units.format_name): a fit.json
    written before the table's format column was normalised may say 'KMeans'."""
    out: dict[str, Any] = {}
    for name, entry in fits.items():
        key = format_name(name)
        if key in out:
            raise InputError(f"fit file {path}: fits {key!r} and {name!r} name one format twice")
        out[key] = entry
    return out


def _check_entry(path: Path, name: str, entry: Any, law: str) -> None:
    where = f"fit file {path}: fit {name!r}"
    if not isinstance(entry, dict):
        raise InputError(f"{where} is not an object of parameters")
    required = LAW_PARAMS[law]
    missing = [k for k in required if k not in entry]
    if missing:
        raise InputError(f"{where} lacks parameters {', '.join(missing)} (a {law}-law fit needs "
                         f"{', '.join(required)})")
    for key, (lo, closed) in PARAM_DOMAINS.items():
        if key in entry:
            _check_number(f"{where}: key {key!r}", entry[key], lo, closed)
    if law == "efficiency":
        effs = entry.get("eff")
        if not isinstance(effs, dict) or not effs:
            raise InputError(f"{where} lacks key 'eff' (an efficiency-law fit needs one eff per P)")
        for p, value in effs.items():
            try:
                float(p)
            except ValueError:
                raise InputError(f"{where}: key 'eff' names P {p!r}, not a number") from None
            _check_number(f"{where}: key 'eff.{p}'", value, 0.0, False)
    samples = entry.get("bootstrap_samples")
    if samples is not None:
        _check_samples(where, samples)


def _check_number(where: str, value: Any, lo: float | None, closed: bool) -> None:
    """``value`` a finite number (not a bool or a string) in its domain: > lo, or >= lo when ``closed``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where} is {value!r}; allowed: a finite number")
    if lo is not None and (value < lo or (value == lo and not closed)):
        bound = f">= {lo:g}" if closed else f"> {lo:g}"
        raise InputError(f"{where} is {value!r}; allowed: a finite number {bound}")


def _check_samples(where: str, samples: Any) -> None:
    """Bootstrap draws: per parameter a list of numbers (null: a failed refit), all of one length."""
    ok = isinstance(samples, dict) and all(
        isinstance(v, list) and all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))
                                    for x in v)
        for v in samples.values()
    )
    if not ok or len({len(v) for v in samples.values()}) > 1:
        raise InputError(f"{where}: key 'bootstrap_samples' is not a list of numbers of one length per "
                         "parameter")


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


def check_data_is_fitted(fit: FitFile, path: str | Path, allow_other: bool = False) -> str | None:
    """``--data`` must be the table ``fit`` was fitted to (the sha256 fit.json records): another table would
    draw one fit over foreign points without a word.  Refused with one line, unless ``allow_other`` (then
    the warning to print is returned; comparing a fit with a later gather of the same sweep is legitimate,
    but must say so).  A fit.json that records no digest cannot be checked: that is the warning."""
    recorded = (fit.data.get("data") or {}).get("sha256") if isinstance(fit.data.get("data"), dict) else None
    if not recorded:
        return f"{fit.path} records no sha256 of its data; cannot check that --data {path} is the fitted one"
    if sha256_of(path) == recorded:
        return None
    fitted = (fit.data.get("data") or {}).get("path") or "its data"
    if not allow_other:
        raise InputError(
            f"--data: {path} is not the table {fit.path} was fitted to ({fitted}, sha256 "
            f"{recorded[:12]}...); pass that table, or --allow-other-data to draw this fit over other points"
        )
    return f"--data {path} is not the table {fit.path} was fitted to ({fitted}); its points are not the fit's"


def infer_n_convention(frame: Any) -> str | None:
    """Which count column N equals (a `bitlaw gather` table writes N = N_quant by default), else None."""
    for name, column in (("quant", "N_quant"), ("nonembed", "N_nonembed"), ("total", "N_total")):
        if column in frame and (frame[column].to_numpy(dtype=float) == frame["N"].to_numpy()).all():
            return name
    return None


def units_text(entry: dict[str, Any]) -> str:
    """How many independent runs a fit saw, as `bitlaw fit` and the report print it: '20 trunks' when branches
    share trunks (60 branch rows of 20 trunks are not 60 independent runs), else 'N runs'."""
    trunks, runs = entry.get("n_trunks"), entry.get("n_runs", "?")
    if isinstance(trunks, int) and isinstance(runs, int) and trunks < runs:
        return f"{trunks} trunks"
    return f"{runs} runs"
