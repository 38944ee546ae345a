"""Which bit width, which model, for M bytes of weights and D training tokens (docs/method.md §7).

For every bit width the largest shape of the family that fits the budget is the loss-optimal one at that bit
width (loss falls with N at fixed P and D), so the search is: per bit width, that shape; across bit widths,
the lowest predicted loss. At fixed D this is the largest N_eff whatever A and α are, which is how presets
without published A, B, E are ranked. With bootstrap samples in the fit, every resample repeats the ranking;
the share of resamples each bit width wins and the winner's loss interval come from those.

A fit whose flags say its law is not identified (fit.answer.caveats.blocking_flags), or whose bit widths all
predict
the same loss (α = 0), gets no winner: the leading row is reported as the point estimate's, unstarred, and a
resample whose bit widths tie wins for none of them (with α = 0 argmin used to hand every tie to 1 bit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fit.answer.caveats import blocking_flags, fit_flags, flag_warnings, pooled_warning
from fit.answer.memory import BF16_BITS, BitAccounting, Interpolation, Shape, check_format, shape_bytes
from fit.answer.presets import FormatLaw, LawSource
from fit.answer.query import can_answer, check_answerable, check_law, loss_matrix, n_eff_of
from fit.errors import InputError
from fit.fitfile import FitFile
from fit.units import (  # noqa: F401 (re-exported: the CLI and tests import them from here)
    ALLOWED_BITS,
    DEFAULT_BITS,
    TOKEN_SUFFIX,
    UNITS,
    format_bytes,
    format_count,
    parse_bits,
    parse_memory,
    parse_tokens,
)

N_COLUMN_CONVENTION = {"N": "quant", "N_quant": "quant", "N_nonembed": "nonembed", "N_total": "total"}
TIE = 1e-12  # relative loss difference below which two bit widths tie


@dataclass(frozen=True)
class FitSource(LawSource):
    """A LawSource read from fit.json, which also knows each fit's flags."""

    flags: dict[str, list[str]] = field(default_factory=dict)
    caveats: tuple[str, ...] = ()  # about the fit as a whole (e.g. formats pooled without --by format)
    data_ranges: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # fit.json's

    def flags_for(self, fmt: str) -> list[str]:
        return self.flags.get(fmt, self.flags.get("all", []))


def warnings_for(source: LawSource, fmt: str) -> list[str]:
    """The ``warning:`` lines of an answer about ``fmt``: the serving fit's flags, then the caveats."""
    if not isinstance(source, FitSource):
        return []
    name = fmt if fmt in source.flags else "all"
    return flag_warnings({name: source.flags_for(fmt)}) + list(source.caveats)


# ----------------------------------------------------------------------------- the law source


def source_from_fit(fitfile: FitFile) -> LawSource:
    """A fit.json as a LawSource: every fit entry, its bootstrap samples, and the N convention it used."""
    check_law(fitfile.law, str(fitfile.path))
    data = fitfile.data
    column = str((data.get("columns") or {}).get("N", "N"))
    # fit.json says quant|nonembed|total, or that N came as given from a column (then its name decides).
    convention = str(data.get("n_convention"))
    if convention not in ("quant", "nonembed", "total"):
        convention = N_COLUMN_CONVENTION.get(column, "quant")
    laws, ranges, spans = {}, {}, {}
    for fmt in fitfile.formats:
        laws[fmt] = FormatLaw(fmt, fitfile.params(fmt), fitfile.bootstrap_samples(fmt))
        entry = fitfile.entry(fmt)
        p_range = entry.get("P_range") or (entry.get("data_range") or {}).get("P")
        if isinstance(p_range, list | tuple) and len(p_range) == 2:
            ranges[fmt] = (float(p_range[0]), float(p_range[1]))
        spans[fmt] = {k: (float(v[0]), float(v[1])) for k, v in (entry.get("data_range") or {}).items()}
    caveats = tuple(pooled_warning(fitfile))
    return FitSource(
        str(fitfile.path), laws, convention, p_range=ranges, flags=fit_flags(fitfile), caveats=caveats,
        data_ranges=spans,
    )


# ----------------------------------------------------------------------------- the recommendation


@dataclass
class Row:
    """One bit width at one budget: the largest shape that fits, and what the law says about it."""

    bits: int
    format: str  # "none" for bf16
    p_w: float
    shape: Shape | None  # None: nothing of the family fits at this bit width
    memory_bytes: float = math.nan
    n_law: float = math.nan  # the N the law uses (per the fit's N convention)
    n_eff: float = math.nan
    loss: float | None = None
    win_share: float | None = None
    loss_ci: tuple[float, float] | None = None
    best: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "bits": self.bits,
            "format": self.format,
            "P_w": self.p_w,
            "shape": self.shape.as_dict() if self.shape else None,
            "memory_bytes": None if self.shape is None else self.memory_bytes,
            "N": None if self.shape is None else self.n_law,
            "N_eff": None if self.shape is None else self.n_eff,
            "loss": self.loss if self.loss is not None and math.isfinite(self.loss) else None,
            "loss_ci": list(self.loss_ci) if self.loss_ci else None,
            "win_share": self.win_share,
            "best": self.best,
        }


@dataclass
class Recommendation:
    budget_bytes: float
    tokens: float
    format: str
    ranked_by: str  # "loss" or "N_eff"
    rows: list[Row]
    n_resamples: int = 0
    notes: list[str] = field(default_factory=list)
    leader: Row | None = None  # the point estimate's first place; None when every bit width ties
    unidentified: list[str] = field(default_factory=list)  # why there is no winner (empty: there is one)
    n_tied: int = 0  # resamples in which the lowest loss is shared

    @property
    def best(self) -> Row | None:
        """The winner, or None when the law cannot name one (see ``unidentified``)."""
        return next((r for r in self.rows if r.best), None)


def minimum_budget(shapes: list[Shape], bits: list[int], fmt: str, acct: BitAccounting) -> tuple[float, str]:
    """The smallest budget that holds any candidate, and which one that is."""
    return min(
        (shape_bytes(s, acct.p_w(b, fmt)), f"{s.name} at {b} bits, of which {format_bytes(2 * s.n_hp)} bf16")
        for s in shapes
        for b in bits
    )


def check_bits_in_range(source: LawSource, fmt: str, bits: list[int], acct: BitAccounting) -> None:
    p_range = source.p_range.get(fmt) or source.p_range.get("all")
    if not p_range:
        return
    law = source.law(fmt)

    def inside(b: int) -> bool:
        return p_range[0] - 1e-9 <= law.law_p(b, acct.p_w(b, fmt)) <= p_range[1] + 1e-9

    outside = [b for b in bits if not inside(b)]
    if outside:
        allowed = ",".join(str(b) for b in ALLOWED_BITS if inside(b)) or "none"
        raise InputError(
            f"--bits: {','.join(map(str, outside))} lies outside the fit, whose data span P = "
            f"{p_range[0]:g}..{p_range[1]:g} bits per weight; allowed: {allowed}"
        )


def recommend(
    source: LawSource,
    budget_bytes: float,
    tokens: float,
    shapes: list[Shape],
    bits: list[int] | tuple[int, ...] = DEFAULT_BITS,
    fmt: str | None = None,
    acct: BitAccounting | None = None,
) -> Recommendation:
    """Rank bit widths for one budget; see the module docstring."""
    acct = acct or BitAccounting()
    fmt = check_format(fmt or source.default_format)
    if fmt == "none":
        raise InputError("--format: pick a quantized format (kmeans, uniform, ...); bf16 is --bits 16")
    law = source.law(fmt)
    bits = sorted(set(bits))
    check_bits_in_range(source, fmt, bits, acct)
    floor, which = minimum_budget(shapes, bits, fmt, acct)
    if budget_bytes < floor:
        raise InputError(
            f"--memory: {format_bytes(budget_bytes)} holds no model of this family; the minimum budget is "
            f"{format_bytes(floor)} ({floor:.4g} bytes: {which})"
        )

    rows = []
    for b in bits:
        p_w = acct.p_w(b, fmt)
        fitting = [s for s in shapes if shape_bytes(s, p_w) <= budget_bytes]
        row = Row(b, "none" if b == BF16_BITS else fmt, p_w, None)
        check_answerable(law.params, [b], [law.law_p(b, p_w)])  # an efficiency fit knows only its P
        if fitting:
            row.shape = max(fitting, key=lambda s: (s.n_quant, -s.n_hp))
            row.memory_bytes = shape_bytes(row.shape, p_w)
            row.n_law = float(row.shape.n_for(source.n_convention))
            p_law = law.law_p(b, p_w)
            row.n_eff = n_eff_of(law.params, row.n_law, p_law)
        rows.append(row)
    live = [r for r in rows if r.shape is not None]

    notes = [source.note] if source.note else []
    n = np.array([r.n_law for r in live])
    p = np.array([law.law_p(r.bits, r.p_w) for r in live])
    if law.has_loss:
        point = {k: np.array([v]) for k, v in law.params.items()}
        losses = loss_matrix(point, n, p, tokens)[0]
        for r, value in zip(live, losses, strict=True):
            r.loss = float(value)
        tied = np.isclose(losses, np.min(losses), rtol=TIE, atol=0).sum() > 1
        winner = None if tied else live[int(np.argmin(losses))]
        ranked_by = "loss"
    else:
        winner = max(live, key=lambda r: r.n_eff)
        ranked_by = "N_eff"
    flags = source.flags_for(fmt) if isinstance(source, FitSource) else []  # presets carry no flags
    unidentified = [f"flagged {flag}" for flag in blocking_flags(flags)]
    if winner is None:
        unidentified.insert(0, f"every bit width predicts the same loss, {losses[0]:.4f}")
    elif not unidentified:
        winner.best = True
    largest = max(shapes, key=lambda s: (s.n_quant, -s.n_hp))
    if winner is not None and winner.shape == largest and budget_bytes > 1.25 * winner.memory_bytes:
        notes.append(
            f"at {format_bytes(budget_bytes)} the winner is the family's largest shape ({largest.name}), "
            f"using only {format_bytes(winner.memory_bytes)}; a larger family "
            "(e.g. --arch llama3:continuous) may do better"
        )

    n_resamples = n_tied = 0
    if law.samples and law.has_loss:
        size = len(next(iter(law.samples.values())))
        draws = {k: np.asarray(law.samples.get(k, np.full(size, v)), float) for k, v in law.params.items()}
        matrix = loss_matrix(draws, n, p, tokens)  # (K, rows)
        ok = np.all(np.isfinite([draws[k] for k in draws]), axis=0)
        matrix = matrix[ok]
        n_resamples = len(matrix)
        if n_resamples:
            # Every contender gets its interval, not only the winner: a forecast check (verify.json)
            # compares each contender's measured loss with its own predicted CI.
            for i, r in enumerate(live):
                r.loss_ci = percentile_ci(matrix[:, i])
        if n_resamples and winner is not None:
            low = matrix.min(axis=1, keepdims=True)
            untied = np.isclose(matrix, low, rtol=TIE, atol=0).sum(axis=1) == 1
            n_tied = int(n_resamples - untied.sum())
            wins = np.bincount(np.argmin(matrix[untied], axis=1), minlength=len(live))
            for i, r in enumerate(live):
                r.win_share = float(wins[i] / n_resamples)
        elif winner is None:
            n_resamples = 0  # every bit width ties: no win shares to report (the CIs above stay)
    return Recommendation(
        budget_bytes, tokens, fmt, ranked_by, rows, n_resamples, notes, winner, unidentified, n_tied
    )


def percentile_ci(column: np.ndarray) -> tuple[float, float] | None:
    """The 2.5/97.5 percentiles of one row's loss over the draws; None when a draw has no model there
    (an infinite loss, capacity ≤ 0), since that interval is unbounded and JSON cannot carry it."""
    if not np.all(np.isfinite(column)):
        return None
    lo, hi = np.percentile(column, [2.5, 97.5])
    return float(lo), float(hi)


def smooth_n_eff(
    source: LawSource,
    fmt: str,
    budget_bytes: float,
    anchors: list[Shape],
    bits: list[int],
    acct: BitAccounting,
) -> np.ndarray:
    """Per bit width, N_eff of the largest member of the smooth (un-rounded) family through ``anchors`` that
    fits ``budget_bytes``; NaN where none does. The rounding-free view of the trade-off: on it the best bit
    width falls monotonically as the budget grows, which the buildable ladder only follows up to its rungs.
    """
    law = source.law(fmt)
    path = Interpolation(tuple(sorted(anchors, key=lambda s: s.n_total)))
    out = []
    for b in bits:
        p_w = acct.p_w(b, fmt)
        t = path.largest_fitting(budget_bytes, p_w)
        if math.isnan(t):
            out.append(math.nan)
            continue
        n_quant, n_hp = path.counts(t)
        n_law = {"quant": n_quant, "total": n_quant + n_hp}.get(source.n_convention, n_quant)
        p_law = law.law_p(b, p_w)
        out.append(n_eff_of(law.params, n_law, p_law) if can_answer(law.params, p_law) else math.nan)
    return np.array(out)


# ----------------------------------------------------------------------------- output


def render_text(recs: list[Recommendation], source: LawSource, arch: str) -> str:
    """Human-readable tables, one per budget; ``*`` marks the winner."""
    first = recs[0]
    n_name = {"quant": "quantized params", "nonembed": "non-embedding params", "total": "all params"}
    tokens = "" if math.isnan(first.tokens) else f"D = {first.tokens:.3g} tokens; "
    n_meaning = n_name[source.n_convention]
    lines = [f"law: {source.name} (format {first.format}, N = {n_meaning}); {tokens}arch {arch}"]
    lines += [f"note: {source.note}"] if source.note else []
    for rec in recs:
        budget = f"{format_bytes(rec.budget_bytes)} ({rec.budget_bytes:.4g} bytes)"
        lines += ["", f"budget {budget}, ranked by {rec.ranked_by}"]
        header = ["", "bits", "format", "P_w", "model", "N_quant", "N_hp", "memory", "N_eff"]
        if rec.ranked_by == "loss":
            header.append("loss")
        if rec.n_resamples:
            header.append(f"wins/{rec.n_resamples}")
        table = [header]
        for r in rec.rows:
            cells = ["*" if r.best else "", str(r.bits), r.format, f"{r.p_w:g}"]
            if r.shape is None:
                cells += ["(nothing fits)", "", "", "", ""]
            else:
                cells += [
                    r.shape.name,
                    format_count(r.shape.n_quant),
                    format_count(r.shape.n_hp),
                    format_bytes(r.memory_bytes),
                    format_count(r.n_eff),
                ]
            if rec.ranked_by == "loss":
                cells.append("" if r.loss is None else f"{r.loss:.4f}")
            if rec.n_resamples:
                cells.append("" if r.win_share is None else f"{100 * r.win_share:.0f}%")
            table.append(cells)
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        lines.append(summary(rec))
        lines += [f"note: {note}" for note in rec.notes if note != source.note]
    return "\n".join(lines)


def bits_label(row: Row, with_format: bool = True) -> str:
    return "bf16" if row.bits == BF16_BITS else f"{row.bits}-bit" + (f" {row.format}" if with_format else "")


def summary(rec: Recommendation) -> str:
    """``best: ...``, or, for a law that cannot rank, ``best: not identified (...)`` and no win claim."""
    lead = rec.leader
    if rec.unidentified:
        why = "; ".join(rec.unidentified)
        text = f"best: not identified ({why})"
        if lead is not None:
            text += f"; the point estimate ranks {bits_label(lead)} first, which these data do not support"
        return text
    text = f"best: {bits_label(lead)}, {lead.shape.describe() if lead.shape else ''}"
    if lead.loss is not None:
        text += f", loss {lead.loss:.4f}"
    if lead.loss_ci:
        text += f" (95% CI {lead.loss_ci[0]:.4f}-{lead.loss_ci[1]:.4f})"
    if lead.win_share is not None:
        text += f", wins {100 * lead.win_share:.0f}% of {rec.n_resamples} resamples"
        text += f" ({rec.n_tied} tied)" if rec.n_tied else ""
    return text


def to_json(
    recs: list[Recommendation], source: LawSource, arch: str, warnings: list[str] | None = None
) -> dict[str, object]:
    """``best`` is the winner at the largest budget; ``budgets[i].best`` the winner at each (null, with
    ``identified`` false, where the fit's law cannot rank bit widths; ``point_estimate`` is its leader)."""
    by_budget = [
        {
            "budget_bytes": rec.budget_bytes,
            "ranked_by": rec.ranked_by,
            "n_resamples": rec.n_resamples,
            "best": rec.best.as_dict() if rec.best else None,
            "identified": not rec.unidentified,
            "not_identified_because": rec.unidentified,
            "point_estimate": rec.leader.as_dict() if rec.leader else None,
            "n_tied": rec.n_tied,
            "rows": [r.as_dict() for r in rec.rows],
            "notes": [note for note in rec.notes if note != source.note],
        }
        for rec in recs
    ]
    largest = max(range(len(recs)), key=lambda i: recs[i].budget_bytes)
    return {
        "best": by_budget[largest]["best"],  # null when the law cannot name a winner (see "identified")
        "identified": all(not rec.unidentified for rec in recs),
        "source": source.name,
        "format": recs[0].format,
        "tokens": None if math.isnan(recs[0].tokens) else recs[0].tokens,
        "arch": arch,
        "n_convention": source.n_convention,
        "notes": [source.note] if source.note else [],
        "warnings": list(warnings or []),
        "budgets": by_budget,
    }
