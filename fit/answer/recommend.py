"""Which bit width, which model, for M bytes of weights and D training tokens (docs/method.md §7).

For every bit width the largest shape of the family that fits the budget is the loss-optimal one at that bit
width (loss falls with N at fixed P and D), so the search is: per bit width, that shape; across bit widths,
the lowest predicted loss. At fixed D this is the largest N_eff whatever A and α are, which is how presets
without published A, B, E are ranked. With bootstrap samples in the fit, every resample repeats the ranking;
the share of resamples each bit width wins and the winner's loss interval come from those.

A fit whose flags say its law is not identified (fit.answer.caveats.blocking_flags), or whose bit widths all
predict the same loss (α = 0), gets no winner: the leading row is reported as the point estimate's,
unstarred, and a resample whose bit widths tie wins for none of them (with α = 0 argmin used to hand every
tie to 1 bit).

A fit.json becomes a law source in fit.answer.fit_source; fit.render.recommend_text prints the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fit.answer.caveats import blocking_flags
from fit.answer.fit_source import FitSource
from fit.answer.forecast import forecast, forecast_nats
from fit.answer.memory import BF16_BITS, BitAccounting, Shape, check_format, shape_bytes
from fit.answer.presets import FormatLaw, LawSource
from fit.answer.query import can_answer, check_answerable, loss_matrix, n_eff_of
from fit.answer.shapes import Interpolation
from fit.errors import InputError
from fit.units import ALLOWED_BITS, DEFAULT_BITS, format_bytes

TIE = 1e-12  # relative loss difference below which two bit widths tie
LARGEST_SHAPE_SLACK = 1.25  # a budget this much above the largest shape's bytes: say a larger family may help


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
    forecast: dict[str, object] | None = None  # fit.answer.forecast's block (a fit with an error model)
    forecast_nats: float | None = None  # its error in nats at this row: loss·(exp(r) − 1)

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
            "forecast": self.forecast,
            "forecast_error_nats": self.forecast_nats,
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
    undecided: str | None = None  # why the margin cannot carry a winner (None: it can, or no error model)
    margin: dict[str, float] | None = None  # leader's margin over the runner-up against their forecast error

    @property
    def best(self) -> Row | None:
        """The winner, or None when the law cannot name one (see ``unidentified``, ``undecided``)."""
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
    entry: dict | None = None,
    seed_spread: float = 0.0,
) -> Recommendation:
    """Rank bit widths for one budget; see the module docstring.  ``entry``: the fit.json entry serving
    ``fmt`` (its data range and error model): each row then gets its forecast interval, and a leader whose
    margin over the runner-up the forecast error (plus ``seed_spread``, nats) can carry is no winner."""
    acct = acct or BitAccounting()
    fmt = quantized_format(source, fmt)
    law = source.law(fmt)
    bits = sorted(set(bits))
    check_bits_in_range(source, fmt, bits, acct)
    check_budget_holds_a_model(budget_bytes, shapes, bits, fmt, acct)
    rows = [largest_fitting_row(source, law, fmt, b, shapes, budget_bytes, acct) for b in bits]
    live = [r for r in rows if r.shape is not None]
    n = np.array([r.n_law for r in live])
    p = np.array([law.law_p(r.bits, r.p_w) for r in live])
    winner, ranked_by, unidentified = rank_point_estimate(source, law, fmt, live, n, p, tokens)
    notes = [source.note] if source.note else []
    notes += largest_shape_note(winner, shapes, budget_bytes)
    n_resamples, n_tied = rank_resamples(law, live, n, p, tokens, winner)
    rec = Recommendation(
        budget_bytes, tokens, fmt, ranked_by, rows, n_resamples, notes, winner, unidentified, n_tied
    )
    if entry is not None and law.has_loss and "N" in (entry.get("data_range") or {}):
        # without the fitted range (a hand-written fit.json) no answer can say how far it extrapolates
        decide_margin(rec, live, entry, tokens, seed_spread)
    return rec


def decide_margin(
    rec: Recommendation, live: list[Row], entry: dict, tokens: float, seed_spread: float
) -> None:
    """Attach each row's forecast, and withdraw the winner when the predicted margin over the runner-up does
    not exceed their combined forecast error: the two errors in quadrature (they come from one fit but at
    different N and D/N, so neither their sum nor zero is right; quadrature is the usual middle), plus the
    seed spread of the measured losses, which no fit can beat (docs/method.md §14)."""
    for r in live:
        if r.loss is not None and math.isfinite(r.loss):
            r.forecast = forecast(entry, r.loss, r.loss_ci, r.n_law, tokens)
            r.forecast_nats = forecast_nats(entry, r.loss, r.n_law, tokens)
    ranked = sorted((r for r in live if r.forecast_nats is not None), key=lambda r: r.loss)
    if len(ranked) < 2 or rec.leader is None or ranked[0] is not rec.leader:
        return
    lead, second = ranked[0], ranked[1]
    margin = float(second.loss - lead.loss)
    error = float(math.hypot(lead.forecast_nats, second.forecast_nats) + seed_spread)
    rec.margin = {"margin_nats": margin, "forecast_error_nats": error, "seed_spread_nats": seed_spread,
                  "runner_up_bits": second.bits}
    if margin <= error:
        rec.undecided = (f"margin {margin:.4f} < forecast error {error:.4f} nats over the runner-up "
                         f"{second.bits}-bit")
        lead.best = False


def quantized_format(source: LawSource, fmt: str | None) -> str:
    """The format asked for (or the source's default), which must be a quantized one."""
    fmt = check_format(fmt or source.default_format)
    if fmt == "none":
        raise InputError("--format: pick a quantized format (kmeans, uniform, ...); bf16 is --bits 16")
    return fmt


def check_budget_holds_a_model(
    budget_bytes: float, shapes: list[Shape], bits: list[int], fmt: str, acct: BitAccounting
) -> None:
    floor, which = minimum_budget(shapes, bits, fmt, acct)
    if budget_bytes < floor:
        raise InputError(
            f"--memory: {format_bytes(budget_bytes)} holds no model of this family; the minimum budget is "
            f"{format_bytes(floor)} ({floor:.4g} bytes: {which})"
        )


def largest_fitting_row(
    source: LawSource,
    law: FormatLaw,
    fmt: str,
    b: int,
    shapes: list[Shape],
    budget_bytes: float,
    acct: BitAccounting,
) -> Row:
    """The row of bit width ``b``: the largest shape that fits the budget (``shape`` None if none does)."""
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
    return row


def rank_point_estimate(
    source: LawSource,
    law: FormatLaw,
    fmt: str,
    live: list[Row],
    n: np.ndarray,
    p: np.ndarray,
    tokens: float,
) -> tuple[Row | None, str, list[str]]:
    """(the point estimate's leader, what it is ranked by, why it is no winner); fills each row's loss and
    stars the leader when nothing says the law cannot rank. Leader None: every bit width ties."""
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
    return winner, ranked_by, unidentified


def largest_shape_note(winner: Row | None, shapes: list[Shape], budget_bytes: float) -> list[str]:
    """A note when the winner is the family's largest shape and leaves much of the budget unused."""
    largest = max(shapes, key=lambda s: (s.n_quant, -s.n_hp))
    if winner is None or winner.shape != largest or budget_bytes <= LARGEST_SHAPE_SLACK * winner.memory_bytes:
        return []
    return [
        f"at {format_bytes(budget_bytes)} the winner is the family's largest shape ({largest.name}), "
        f"using only {format_bytes(winner.memory_bytes)}; a larger family "
        "(e.g. --arch llama3:continuous) may do better"
    ]


def rank_resamples(
    law: FormatLaw, live: list[Row], n: np.ndarray, p: np.ndarray, tokens: float, winner: Row | None
) -> tuple[int, int]:
    """Repeat the ranking on every bootstrap sample: fills each row's loss CI and win share; returns
    (resamples counted, resamples whose lowest loss is shared)."""
    if not (law.samples and law.has_loss):
        return 0, 0
    size = len(next(iter(law.samples.values())))
    draws = {k: np.asarray(law.samples.get(k, np.full(size, v)), float) for k, v in law.params.items()}
    matrix = loss_matrix(draws, n, p, tokens)  # (K, rows)
    ok = np.all(np.isfinite([draws[k] for k in draws]), axis=0)
    matrix = matrix[ok]
    n_resamples = len(matrix)
    if not n_resamples:
        return 0, 0
    # Every contender gets its interval, not only the winner: a forecast check (verify.json)
    # compares each contender's measured loss with its own predicted CI.
    for i, r in enumerate(live):
        r.loss_ci = bounded_loss_ci(matrix[:, i])
    if winner is None:
        return 0, 0  # every bit width ties: no win shares to report (the CIs above stay)
    low = matrix.min(axis=1, keepdims=True)
    untied = np.isclose(matrix, low, rtol=TIE, atol=0).sum(axis=1) == 1
    n_tied = int(n_resamples - untied.sum())
    wins = np.bincount(np.argmin(matrix[untied], axis=1), minlength=len(live))
    for i, r in enumerate(live):
        r.win_share = float(wins[i] / n_resamples)
    return n_resamples, n_tied


def bounded_loss_ci(column: np.ndarray) -> tuple[float, float] | None:
    """The 2.5/97.5 percentiles of one row's loss over the draws; None when a draw has no model there
    (an infinite loss, capacity ≤ 0), since that interval is unbounded and JSON cannot carry it.
    Unlike fit.solve.bootstrap.finite_percentile_ci, a non-finite draw is not dropped: it voids the CI."""
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
