"""A recommendation (fit.answer.recommend) as the CLI prints it: one text table per budget, or JSON."""

from __future__ import annotations

import math

from fit.answer.memory import BF16_BITS
from fit.answer.presets import LawSource
from fit.answer.recommend import Recommendation, Row
from fit.units import format_bytes, format_count


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
        lines.append(summary(rec, source.name))
        lines += [f"note: {note}" for note in rec.notes if note != source.note]
    return "\n".join(lines)


def bits_label(row: Row, with_format: bool = True) -> str:
    return "bf16" if row.bits == BF16_BITS else f"{row.bits}-bit" + (f" {row.format}" if with_format else "")


def summary(rec: Recommendation, fit: str = "FIT.json") -> str:
    """``best: ...``, or, for a law that cannot rank, ``best: not identified (...)`` and no win claim."""
    lead = rec.leader
    if rec.unidentified:
        why = "; ".join(rec.unidentified)
        text = f"best: not identified ({why})"
        if lead is not None:
            text += f"; the point estimate ranks {bits_label(lead)} first, which these data do not support"
        return text
    if rec.undecided:
        m = rec.margin or {}
        return (f"best: not decidable at this budget (margin {m.get('margin_nats', math.nan):.4f} < forecast "
                f"error {m.get('forecast_error_nats', math.nan):.4f} nats); "
                f"test it: {verify_command(rec, fit)}"
                f"; the point estimate ranks {bits_label(lead)} first, {m.get('runner_up_bits')}-bit second")
    text = f"best: {bits_label(lead)}, {lead.shape.describe() if lead.shape else ''}"
    if lead.loss is not None:
        text += f", loss {lead.loss:.4f}"
    if lead.loss_ci:
        text += f" (95% CI {lead.loss_ci[0]:.4f}-{lead.loss_ci[1]:.4f})"
    if lead.win_share is not None:
        text += f", wins {100 * lead.win_share:.0f}% of {rec.n_resamples} resamples"
        text += f" ({rec.n_tied} tied)" if rec.n_tied else ""
    if lead.forecast:
        lo, hi = lead.forecast["interval"]
        text += f"; forecast interval {lo:.4f}-{hi:.4f} (N factor {lead.forecast['N_factor']:.3g})"
    if rec.margin:
        text += (f"; margin {rec.margin['margin_nats']:.4f} > forecast error "
                 f"{rec.margin['forecast_error_nats']:.4f} nats")
    return text


def verify_command(rec: Recommendation, fit: str = "FIT.json") -> str:
    """The `bitlaw verify plan` that trains the contenders of this budget."""
    return (f"bitlaw verify plan {fit} --runs RUNS.csv -o verify --format {rec.format} "
            f"--memory {rec.budget_bytes:.6g} --tokens {rec.tokens:.6g}")


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
            "undecided_reason": rec.undecided,
            "margin": rec.margin,
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
        "undecided_reason": by_budget[largest]["undecided_reason"],  # the margin cannot carry a winner
        "source": source.name,
        "format": recs[0].format,
        "tokens": None if math.isnan(recs[0].tokens) else recs[0].tokens,
        "arch": arch,
        "n_convention": source.n_convention,
        "notes": [source.note] if source.note else [],
        "warnings": list(warnings or []),
        "budgets": by_budget,
    }
