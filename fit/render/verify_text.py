"""The report's section for `bitlaw verify check`: per tested budget, did the forecast hold, and why not.

One subsection per budget (``inside`` the grid's envelope, ``beyond`` it, or a budget given by hand), each
with its verdict said in words, the contenders' point, bootstrap interval, forecast interval and measured
loss, and — where a forecast failed — its cause, read off the numbers (how far the contender lay beyond
the grid's N and D/N). A failed forecast stays in the report.
"""

from __future__ import annotations

from typing import Any

from fit.answer.memory import BF16_BITS
from fit.units import format_bytes, format_count

ENVELOPE_WORDS = {
    "inside": "inside the grid (every contender within [N_min, 1.5·N_max] and the grid's D/N range)",
    "beyond": "beyond the grid (the largest contender at least 2× the grid's largest N)",
}


def bits_name(bits: int, fmt: str) -> str:
    return "bf16" if fmt == "none" or bits == BF16_BITS else f"{bits}-bit {fmt}"


def _where(r: dict[str, Any]) -> str:
    """A contender's distance from the data, in words."""
    parts = []
    if r.get("N_factor") is not None:
        parts.append(f"{r['N_factor']:.2g}× the grid's largest N")
    dn, span = r.get("D_over_N"), r.get("D_over_N_range")
    if dn is not None and span:
        outside = "outside" if not span[0] <= dn <= span[1] else "inside"
        parts.append(f"D/N {dn:.3g} {outside} {span[0]:.3g}–{span[1]:.3g}")
    return ", ".join(parts)


def _headline(result: dict[str, Any]) -> list[str]:
    pred, meas, fmt = result["predicted_winner"], result["measured_winner"], result["format"]
    if pred is None:
        check = result.get("undecided_check")
        why = result.get("undecided_reason") or "; ".join(result["warnings"])
        line = (f"**bitlaw named no winner** ({why}); the measured winner is "
                f"{bits_name(meas['bits'], fmt)} ({meas['model']}).")
        if check:
            within = "within" if check["within"] else "**outside**"
            line += (f" Measured margin {bits_name(check['leader_bits'], fmt)} vs "
                     f"{bits_name(check['runner_up_bits'], fmt)}: {check['measured_margin_nats']:+.4f} nats, "
                     f"{within} the stated error ±{check['stated_error_nats']:.4f}.")
        return [line]
    if result["winner_held"]:
        return [f"**The forecast held**: predicted and measured winner are both "
                f"{bits_name(pred['bits'], fmt)} ({pred['model']})."]
    regret = result.get("winner_regret")
    close = ("" if regret is None else
             f" The predicted winner's measured loss is {regret:.4f} nats above the measured best"
             + (" (within the 0.01-nat tolerance: a tie at this noise)."
                if result.get("winner_within_tolerance") else "."))
    return [f"**The forecast did not hold**: predicted winner {bits_name(pred['bits'], fmt)} "
            f"({pred['model']}), measured winner {bits_name(meas['bits'], fmt)} ({meas['model']})." + close]


def render_markdown(result: dict[str, Any]) -> str:
    """One budget's section body."""
    fmt = result["format"]
    envelope = result.get("envelope")
    lines = [
        (f"**{envelope.capitalize()}**: {ENVELOPE_WORDS[envelope]}. " if envelope in ENVELOPE_WORDS else "")
        + f"Budget {format_bytes(result['budget_bytes'])} ({result['budget_bytes']:,.0f} bytes) of weights, "
        f"D = {format_count(result['D'])} tokens, format {fmt}: each bit width's largest model of the family "
        "within the budget, trained with the grid's recipe (the fit never saw the new ones).",
        "",
        *_headline(result),
    ]
    meas = result["measured_winner"]
    pred = result["predicted_winner"]
    margin_se = result["measured_margin_se"]
    noise = f" ± {margin_se:.3f} (SE of the two evals; paired windows make it smaller)" if margin_se else ""
    scored = result.get("inside_forecast") or {"n": 0, "inside": 0}
    lines += [
        "",
        f"The measured winner leads the runner-up by {result['measured_margin']:.4f} nats{noise}. "
        f"Ranking predicted {result['ranking_predicted']}, measured {result['ranking_measured']} "
        "(bits; 16 = bf16). "
        f"|predicted − measured|: mean {result['mean_abs_error']:.4f}, "
        f"max {result['max_abs_error']:.4f} nats. "
        f"Inside their forecast interval: {scored['inside']} of {scored['n']} contenders.",
        "",
        "| bits | model | N_quant | weight bytes | predicted [95 % CI] | forecast interval | measured "
        "| predicted − measured | in CI | in forecast | in grid |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["contenders"]:
        ci = r["predicted_ci"]
        ci_text = f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
        band = r.get("forecast_interval")
        band_text = f"[{band[0]:.4f}, {band[1]:.4f}]" if band else "—"
        star = " **(predicted)**" if pred and r["bits"] == pred["bits"] else ""
        star += " **(measured)**" if r["bits"] == meas["bits"] else ""
        in_ci = "—" if r["inside_ci"] is None else ("yes" if r["inside_ci"] else "no")
        in_band = "—" if r.get("inside_forecast") is None else ("yes" if r["inside_forecast"] else "**no**")
        lines.append(
            f"| {bits_name(r['bits'], r['format'])}{star} | {r['model']} | {r['N_quant']:,} | "
            f"{r['memory_bytes']:,.0f} | {r['predicted_loss']:.4f}{ci_text} | {band_text} | "
            f"{r['measured_loss']:.4f} | {r['error']:+.4f} | {in_ci} | {in_band} | "
            f"{'yes' if r['in_grid'] else 'no'} |"
        )
    missed = [r for r in result["contenders"] if r.get("inside_forecast") is False]
    if missed:
        lines.append("\nOutside their forecast interval, with where they lay:")
        for r in missed:
            side = "below" if r["measured_loss"] < r["forecast_interval"][0] else "above"
            lines.append(f"- {bits_name(r['bits'], r['format'])} {r['model']}: "
                         f"measured {r['measured_loss']:.4f}, {side} "
                         f"[{r['forecast_interval'][0]:.4f}, {r['forecast_interval'][1]:.4f}]; "
                         f"{_where(r)}.")
    for other in result.get("other_forms", []):
        if other["predicted_winner"] is None:
            lines.append(f"\nThe {other['law']} form ({other['fit']}) predicts none of these contenders.")
            continue
        cannot = other.get("cannot_predict") or {}
        skipped = (f" (it has no prediction for {', '.join(bits_name(int(b), fmt) for b in cannot)}, "
                   "a bit width it was not fitted on, so its winner is among the others)" if cannot else "")
        held = "held" if other["winner_held"] else "did not hold"
        lines.append(
            f"\nThe {other['law']} form ({other['fit']}) predicts "
            f"{bits_name(other['predicted_winner'], fmt)} wins{skipped}: its forecast {held}; "
            f"mean |predicted − measured| {other['mean_abs_error']:.4f} nats."
        )
    lines += [f"\nwarning: {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"


def render_budgets(verify: dict[str, Any]) -> str:
    """verify.json's ``budgets``, one subsection each, and the share inside the forecast intervals."""
    budgets = verify["budgets"]
    if len(budgets) == 1:
        return render_markdown(budgets[0])
    summary = verify["summary"]
    share = summary["share_inside_forecast"]
    lines = [f"{len(budgets)} budgets, chosen before any contender trained (`bitlaw verify plan "
             "--envelope`); across them "
             f"{summary['inside_forecast']} of {summary['with_forecast_interval']} contenders"
             + (f" ({100 * share:.0f} %)" if share is not None else "")
             + " lie inside their forecast interval.", ""]
    for result in budgets:
        title = (result.get("envelope") or "given").capitalize()
        lines += [f"### {title}: {format_bytes(result['budget_bytes'])}", "", render_markdown(result)]
    return "\n".join(lines)
