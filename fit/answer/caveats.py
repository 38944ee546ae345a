"""What a reader must be told alongside an answer: the fit's flags, whether its law can rank bit widths at
all, and whether a question lies beyond the data the fit saw.

``recommend``, ``predict``, ``plot`` and ``report`` print these as ``warning:`` lines (and
``recommend --json`` as a ``warnings`` list) instead of leaving them in fit.json, where a flagged fit used
to yield a starred winner nobody had a reason to doubt.  No pandas at import time: recommend stays light.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fit.fitfile import FitFile, sha256_of

# A prediction more than this factor beyond the largest (or below the smallest) N or D the fit saw is an
# extrapolation the data cannot vouch for: 10x is one decade, about what a leave-largest-N-out check covers.
RANGE_FACTOR = 10.0
# Flags that leave the bit-width ranking identified: they concern only the D term (which adds the same
# B·D^-β to every bit width at fixed D), only E (the same additive constant for every bit width: at fixed D
# the ranking is by A·N_eff^-α alone, decided by γ once α > 0, which exponent_at_zero and the tied
# resamples guard), or say the quantized runs beat the anchor. They still print as warnings: an absolute
# loss leans on E. Every other flag, including ones added later, withholds the winner.
RANKING_SAFE = ("eff_above_1", "few_distinct_D", "E_unidentified")
D_ONLY_DETAIL = ("beta=", "B=")


def flag_name(flag: str) -> str:
    """A fit flag's name, without its ``: detail`` (``exponent_at_zero: alpha=0`` -> ``exponent_at_zero``)."""
    return flag.split(":", 1)[0].strip()


def blocking_flags(flags: list[str]) -> list[str]:
    """The flags that mean the law cannot rank bit widths (see RANKING_SAFE)."""
    out = []
    for flag in flags:
        detail = flag.split(":", 1)[1].strip() if ":" in flag else ""
        if flag_name(flag) in RANKING_SAFE or detail.startswith(D_ONLY_DETAIL):
            continue
        out.append(flag)
    return out


def fit_flags(fitfile: FitFile, fmt: str | None = None) -> dict[str, list[str]]:
    """{fit name: flags} for every fit, or only for the one serving ``fmt``."""
    fits = fitfile.data["fits"]
    if fmt is None:
        names = list(fits)
    else:
        names = [fmt] if fmt in fits else ["all"] if "all" in fits else [next(iter(fits))]
    return {name: [str(f) for f in (fits[name].get("flags") or [])] for name in names}


def flag_warnings(flags: dict[str, list[str]]) -> list[str]:
    return [f"fit {name!r} is flagged {flag}" for name, found in flags.items() for flag in found]


def unchecked_warning(fitfile: FitFile) -> list[str]:
    """A fit.json made before identification was read off the objective (2026-12-03) has no
    ``identification`` record: its γ may be as unidentified as issue 28's (α at its bound, every γ equally
    good) while its bootstrap CI looks tight, and nothing here can tell. Say so instead of vouching."""
    fits = fitfile.data.get("fits") or {}
    missing = [name for name, entry in fits.items()
               if isinstance(entry, dict) and "identification" not in entry]
    if not missing:
        return []
    return [
        f"{fitfile.path} records no identification check for fit(s) {', '.join(map(repr, missing))} (made by "
        "an older bitlaw): whether each parameter is identified is unknown; refit with this bitlaw to know"
    ]


def pooled_warning(fitfile: FitFile, formats: list[str] | None = None) -> list[str]:
    """A non-Chinchilla fit made without ``--by format`` on a table of several quantized formats fits one γ
    to all of them; say so. ``formats``: the data's formats, when known (else the fit's column map hints)."""
    if fitfile.law == "chinchilla" or fitfile.data.get("by") or list(fitfile.data["fits"]) != ["all"]:
        return []
    quantized = sorted({f for f in (formats or []) if f not in ("none", "bf16")})
    if formats is not None and len(quantized) < 2:
        return []
    if formats is None and "format" not in (fitfile.data.get("columns") or {}):
        return []
    which = f"formats {', '.join(quantized)}" if quantized else "a format column"
    return [
        f"fit 'all' pools {which} into one {fitfile.law} law (fitted without --by format); its answer for "
        "any one format is the pooled one: refit with --by format"
    ]


# ----------------------------------------------------------------------------- the range the fit saw


def data_range(fitfile: FitFile, fmt: str | None = None) -> tuple[dict[str, Any] | None, str]:
    """({"N": (lo, hi), "D": (lo, hi)[, "P": ..., "formats": [...]]}, "") of the rows behind the fit serving
    ``fmt``, or (None, why not).  From the entry's ``data_range`` when fit.json records one, else from the
    data file it names, if that file is still the one fitted (same sha256), filtered as the fit did."""
    entry = fitfile.entry(fmt)
    recorded = entry.get("data_range")
    if isinstance(recorded, dict) and "N" in recorded and "D" in recorded:
        return {k: (float(v[0]), float(v[1])) for k, v in recorded.items() if isinstance(v, list | tuple)}, ""
    info = fitfile.data.get("data") or {}
    path = Path(str(info.get("path", "")))
    if not info.get("path") or not path.is_file():
        return None, f"fit.json records no data range and its data file {info.get('path')} is not there"
    if info.get("sha256") and sha256_of(path) != info["sha256"]:
        return None, f"fit.json records no data range and its data file {path} changed since the fit"
    frame = fit_rows(fitfile, path, fmt)
    ranges: dict[str, Any] = {k: (float(frame[k].min()), float(frame[k].max())) for k in "NDP" if k in frame}
    if "format" in frame:
        ranges["formats"] = sorted(set(frame["format"]))  # for pooled_warning; not a range
    return ranges, ""


def fit_rows(fitfile: FitFile, path: Path, fmt: str | None = None) -> Any:
    """The canonical rows of ``path`` one fit saw: the fit's column map and --where, its own format plus
    the 16-bit anchors for a ``--by format`` fit."""
    from fit.data.table import prepare_table, read_frame

    raw = read_frame(path)
    columns = {k: v for k, v in (fitfile.data.get("columns") or {}).items() if v in raw.columns}
    info = fitfile.data.get("data") or {}
    frame = prepare_table(raw, columns, info.get("where"), require=("N", "D"), drop_invalid=True,
                          drop_early=float(info.get("drop_early") or 0.0)).frame
    name = next(iter(fitfile.data["fits"])) if fmt is None else fmt
    if fitfile.data.get("by") == "format" and "format" in frame and name in set(frame["format"]):
        anchor = frame["format"].isin(["none", "bf16"]) & (frame.get("P", 16) >= 8)
        frame = frame[(frame["format"] == name) | anchor]
    return frame


def range_warnings(
    ranges: dict[str, tuple[float, float]], values: dict[str, float | None], factor: float = RANGE_FACTOR
) -> list[str]:
    """One warning per value beyond ``factor``× the fitted range (N, D), or outside it at all (P)."""
    out = []
    for name, value in values.items():
        if value is None or name not in ranges or not math.isfinite(value):
            continue
        lo, hi = ranges[name]
        slack = 1.0 if name == "P" else factor
        if value > hi * slack * (1 + 1e-9) or value < lo / slack * (1 - 1e-9):
            beyond = f"{value / hi:.3g}x the largest" if value > hi else f"1/{lo / value:.3g} of the smallest"
            rule = "outside" if name == "P" else f"more than {factor:g}x beyond"
            out.append(
                f"{name} = {value:.4g} is {beyond} fitted {name} ({lo:.4g} to {hi:.4g}): {rule} the data, "
                "an extrapolation the fit cannot vouch for"
            )
    return out


def predict_warnings(fitfile: FitFile, fmt: str | None, values: dict[str, float | None]) -> list[str]:
    """Everything ``predict`` must say beside its number: the serving fit's flags, pooling, and the range."""
    out = flag_warnings(fit_flags(fitfile, fmt)) + unchecked_warning(fitfile)
    ranges, why_not = data_range(fitfile, fmt)
    formats = ranges.pop("formats", None) if ranges else None
    out += pooled_warning(fitfile, formats)
    if ranges is None:
        return out + [f"cannot check whether N, D lie inside the fitted data: {why_not}"]
    return out + range_warnings(ranges, values)


def study_warnings(fitfile: FitFile | None, formats: list[str] | None = None) -> list[str]:
    """``plot`` and ``report``: every fit's flags, and pooling (``formats``: the runs table's, when given)."""
    if fitfile is None:
        return []
    return flag_warnings(fit_flags(fitfile)) + unchecked_warning(fitfile) + pooled_warning(fitfile, formats)


# ------------------------------------------------------------------------ identification on the objective


def unidentified_params(entry: dict[str, Any]) -> set[str]:
    """The parameters of a fit entry that its objective does not identify (fit.solve.diagnostics.identify,
    flag ``<name>_unidentified``): their values and bootstrap CIs must not be shown as measurements."""
    verdicts = entry.get("identification") or {}
    found = {n for n, v in verdicts.items() if isinstance(v, dict) and v.get("identified") is False}
    for flag in entry.get("flags") or []:  # a flag alone (an older or hand-made fit.json) says the same
        name = flag_name(str(flag))
        if name.endswith("_unidentified") and name != "E_unidentified":  # E's older flag: E ~ 0, kept
            found.add(name[: -len("_unidentified")])
    return found


def interval_note(entry: dict[str, Any], name: str) -> str:
    """What the profile's 95 % likelihood interval says when it reaches a fitter bound ("" otherwise)."""
    verdict = (entry.get("identification") or {}).get(name) or {}
    interval = verdict.get("interval")
    if not isinstance(interval, list | tuple) or len(interval) != 2 or verdict.get("identified") is False:
        return ""
    lo, hi = interval
    if lo is not None and hi is None:
        return f"profile: bounded only below, {name} >= {lo:.3g}"
    if lo is None and hi is not None:
        return f"profile: bounded only above, {name} <= {hi:.3g}"
    return ""
