"""Compare law forms fitted to the same table: held-out error and an information criterion, per format.

The held-out error is each fit's own "fit on all but the largest N, predict it" MAPE (fit.solve.pipeline);
AIC and
BIC are each entry's ``information`` (fit.solve.diagnostics.information).  Fits are comparable only on the
same
rows with the same objective, so documents that differ in data digest, ``--where``, loss, δ, space or
``--by`` are refused rather than ranked.
"""

from __future__ import annotations

import math
from typing import Any

from fit.errors import InputError

SAME = ("loss", "delta", "space", "by")


def _key(document: dict[str, Any]) -> tuple:
    data = document.get("data") or {}
    early = data.get("drop_early") or 0.0
    return (data.get("sha256"), data.get("where"), early, *(document.get(k) for k in SAME))


def compare_forms(documents: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{label: fit.json document} -> {format: rows sorted by AIC (None last)}, each row ``law, k, n, aic,
    bic, delta_aic, delta_bic, heldout_mape, flags`` (``k``: the parameter count) and ``coupling``, the
    coupled law's exponent k (None for the other forms).  The deltas are to the format's lowest AIC / BIC."""
    if len(documents) < 2:
        raise InputError(f"--compare: needs at least 2 fits of the same table; got {len(documents)}")
    keys = {label: _key(doc) for label, doc in documents.items()}
    first_label, first = next(iter(keys.items()))
    for label, key in keys.items():
        if key != first:
            raise InputError(
                f"--compare: {label} and {first_label} were not fitted to the same rows with the same "
                "objective (data sha256, --where, --drop-early, --loss, --delta, --space, --by must all "
                "match)"
            )
    out: dict[str, list[dict[str, Any]]] = {}
    for label, document in documents.items():
        for fmt, entry in document["fits"].items():
            info = entry.get("information") or {}
            extrap = entry.get("extrapolation") or {}
            out.setdefault(fmt, []).append(
                {
                    "fit": label,
                    "law": document.get("law"),
                    "two_stage": bool(entry.get("two_stage")),
                    "k": info.get("k"),
                    "n": info.get("n"),
                    "aic": info.get("aic"),
                    "bic": info.get("bic"),
                    "heldout_mape": extrap.get("mape"),
                    "coupling": entry.get("k") if document.get("law") == "coupled" else None,
                    "flags": [f.split(":")[0] for f in entry.get("flags", [])],
                }
            )
    for rows in out.values():
        for crit in ("aic", "bic"):
            scored = [r[crit] for r in rows if r[crit] is not None]
            best = min(scored) if scored else None
            for r in rows:
                r[f"delta_{crit}"] = None if r[crit] is None or best is None else r[crit] - best
        rows.sort(key=lambda r: math.inf if r["aic"] is None else r["aic"])
    return out
