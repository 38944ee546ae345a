"""The forecast, tested: 1-Bit Wonder's memory-matched comparison run as a check of a fitted law.

A fit predicts, for a weight-memory budget M and D tokens, which bit width's largest fitting model has the
lowest loss. ``choose_contenders`` asks the recommendation for that model at every bit width (bf16 included),
with its predicted loss and bootstrap interval; the sweep then trains the contenders the grid never trained,
and ``verdict`` sets the measured losses beside the predictions (``verify.json``, docs/method.md §11).

Only the contenders are new data: the fit never saw them, so a forecast that holds is out of sample in N and
in model shape (the low-bit contenders are deeper than any grid model). The budget's default is the memory
of the grid's smallest bf16 model: there the bf16 contender is a grid model and the 1-bit one is several
times the grid's largest N, because the bf16 embedding and head take most of a tiny model's memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from fit.answer.fit_source import source_from_fit
from fit.answer.memory import BF16_BITS, BitAccounting, Shape, check_format, weight_bytes
from fit.answer.recommend import recommend
from fit.errors import InputError
from fit.fitfile import FitFile
from fit.units import format_bytes, format_count
from sweep.contract import SummaryStatus

WINNER_TOLERANCE = 0.01  # nats: a named winner whose measured loss is this close to the best one held
SHAPE_COLUMNS = {
    k: f"model.{k}" for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")
}


@dataclass(frozen=True)
class Contender:
    """One bit width's largest model under the budget, and what the fit says of it."""

    bits: int
    format: str  # "none" for the bf16 contender
    model: str  # the shape's name in the family
    shape: dict[str, int]
    N_quant: int
    memory_bytes: float
    predicted_loss: float
    predicted_ci: tuple[float, float] | None
    in_grid: bool  # the grid trained this (shape, format, bits): its measured loss is in-sample
    P: float  # the law's bits per weight for it (P_w: bits + the block scales' share)
    forecast: dict[str, Any] | None = None  # fit.answer.forecast's block: interval with the backtest's error
    envelope: str | None = None  # the plan's envelope: prefixes the config name, so two budgets' contenders
    # can share one sweep (their Hydra groups side by side on the search path)

    @property
    def point(self) -> str:
        """The named (format, bits) point of conf/point/ that it trains."""
        return "bf16" if self.format == "none" else f"{self.format}{self.bits}"

    @property
    def config_name(self) -> str:
        """The option of the generated Hydra group ``contender`` that trains it."""
        return f"{self.envelope}_{self.point}" if self.envelope else self.point


@dataclass(frozen=True)
class ContenderPlan:
    format: str
    budget_bytes: float
    D: float
    predicted_winner: int | None  # bits; None when the fit names no winner
    contenders: list[Contender]
    grid_max_N: float
    warnings: list[str]
    undecided_reason: str | None = None  # the margin cannot carry a winner (recorded before training)
    margin: dict[str, Any] | None = None
    envelope: str | None = None  # "inside" | "beyond" the grid (fit.study.envelope), or None: a given budget
    block_size: int = 64  # the memory accounting's quantization block (the grid's)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "budget_bytes": self.budget_bytes,
            "D": self.D,
            "predicted_winner": self.predicted_winner,
            "grid_max_N": self.grid_max_N,
            "warnings": list(self.warnings),
            "undecided_reason": self.undecided_reason,
            "margin": self.margin,
            "envelope": self.envelope,
            "block_size": self.block_size,
            "contenders": [asdict(c) for c in self.contenders],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContenderPlan:
        try:
            contenders = [
                Contender(**{**c, "predicted_ci": tuple(c["predicted_ci"]) if c["predicted_ci"] else None})
                for c in data["contenders"]
            ]
            return cls(
                data["format"],
                float(data["budget_bytes"]),
                float(data["D"]),
                data["predicted_winner"],
                contenders,
                float(data["grid_max_N"]),
                list(data.get("warnings", [])),
                data.get("undecided_reason"),
                data.get("margin"),
                data.get("envelope"),
                int(data.get("block_size", 64)),
            )
        except (KeyError, TypeError) as err:
            raise InputError(f"contenders.json: not a contender plan ({err})") from None


def _shape_mask(table: pd.DataFrame, shape: dict[str, int]) -> pd.Series:
    missing = [col for col in SHAPE_COLUMNS.values() if col not in table.columns]
    if missing:
        raise InputError(
            f"runs table: needs the model shape columns {', '.join(missing)} (bitlaw gather writes them)"
        )
    mask = pd.Series(True, index=table.index)
    for key, col in SHAPE_COLUMNS.items():
        mask &= pd.to_numeric(table[col], errors="coerce") == shape[key]
    return mask


def _point_mask(table: pd.DataFrame, shape: dict[str, int], fmt: str, bits: int) -> pd.Series:
    mask = _shape_mask(table, shape) & (table["format"] == fmt)
    return mask if fmt == "none" else mask & (pd.to_numeric(table["bits"], errors="coerce") == bits)


def smallest_bf16_budget(table: pd.DataFrame) -> float:
    """The weight memory of the grid's smallest bf16 model (the budget's default)."""
    anchors = table[table["format"] == "none"]
    if anchors.empty:
        raise InputError(
            "--memory: the runs table has no bf16 (format none) run to size the default budget on"
        )
    return float(
        min(weight_bytes(q, h, BF16_BITS) for q, h in zip(anchors["N_quant"], anchors["N_hp"], strict=True))
    )


def choose_contenders(
    fit: FitFile,
    grid: pd.DataFrame,
    fmt: str,
    shapes: list[Shape],
    budget_bytes: float | None = None,
    tokens: float | None = None,
    bits: tuple[int, ...] = (1, 2, 3, 4, BF16_BITS),
    acct: BitAccounting | None = None,
    envelope: str | None = None,
) -> ContenderPlan:
    """Per bit width the largest shape of ``shapes`` within the budget (default: the grid's smallest bf16
    model's memory) at D = ``tokens`` (default: the grid's largest D), with the fit's loss and interval.
    ``envelope`` (inside | beyond) only labels the plan: fit.study.envelope chose ``budget_bytes``."""
    acct = acct or BitAccounting()
    fmt = check_format(fmt)
    budget = smallest_bf16_budget(grid) if budget_bytes is None else float(budget_bytes)
    D = float(grid["D"].max()) if tokens is None else float(tokens)
    source = source_from_fit(fit)
    entry = fit.entry(fmt)
    rec = recommend(source, budget, D, shapes, bits=list(bits), fmt=fmt, acct=acct, entry=entry)
    law = source.law(fmt)
    contenders = []
    for row in rec.rows:
        if row.shape is None:
            raise InputError(
                f"--memory: {format_bytes(budget)} holds no shape of the family at {row.bits} bits"
            )
        shape = {k: getattr(row.shape, k) for k in SHAPE_COLUMNS}
        # the recommendation's own loss and bootstrap interval for this row (recommend computes both)
        ci = None if row.loss_ci is None else (float(row.loss_ci[0]), float(row.loss_ci[1]))
        # in the grid only if the grid trained this point at this D: a grid shape at a new D is new data
        at_d = np.isclose(pd.to_numeric(grid["D"], errors="coerce"), D, rtol=0.01)
        in_grid = bool((_point_mask(grid, shape, row.format, row.bits) & at_d).any())
        contenders.append(
            Contender(
                row.bits,
                row.format,
                row.shape.name,
                shape,
                row.shape.n_quant,
                float(row.memory_bytes),
                float(row.loss),
                ci,
                in_grid,
                float(law.law_p(row.bits, row.p_w)),
                row.forecast,
                envelope,
            )
        )
    warnings = list(rec.unidentified)
    grid_max = float(grid["N_quant"].max())
    new = [c for c in contenders if not c.in_grid]
    if envelope != "inside" and (not new or max(c.N_quant for c in new) <= grid_max):
        warnings.append(
            f"no contender is larger than the grid's largest N ({format_count(grid_max)}): the test "
            "is not out of sample in N; raise --memory"
        )
    winner = rec.best.bits if rec.best else None
    if rec.undecided:
        warnings.append(f"not decidable at this budget ({rec.undecided}): training the contenders tests it")
    return ContenderPlan(fmt, budget, D, winner, contenders, grid_max, warnings, rec.undecided, rec.margin,
                         envelope, acct.block_size)


def contender_config(contender: Contender) -> str:
    """The Hydra config (group ``contender``) that trains one contender with the grid's recipe: the grid's
    experiment supplies everything else, so the contender differs from a grid run only in shape and point."""
    point = contender.point
    lines = [
        "# @package _global_",
        f"# contender: {contender.bits}-bit {contender.format} {contender.model}, "
        f"N_quant {contender.N_quant:,}, {contender.memory_bytes:,.0f} bytes of weights "
        "(written by `bitlaw verify plan`)",
        "defaults:",
        f"  - override /point: {point}",
        "model:",
        *[f"  {k}: {v}" for k, v in contender.shape.items()],
    ]
    return "\n".join(lines) + "\n"


def measured(
    contender: Contender, D: float, tables: list[pd.DataFrame]
) -> tuple[float | None, float | None, str | None]:
    """(loss, its standard error, run id) of the contender's completed run at D, from the first table that has
    it (the contender sweep first, then the grid). A branch of a longer trunk counts: it is the same run."""
    for table in tables:
        rows = table[_point_mask(table, contender.shape, contender.format, contender.bits)]
        rows = rows[np.isclose(pd.to_numeric(rows["D"], errors="coerce"), D, rtol=0.01)]
        if "status" in rows.columns:
            rows = rows[rows["status"] == SummaryStatus.COMPLETED]
        if len(rows):
            row = rows.iloc[0]
            se = row.get("final_val_loss_se")
            se = float(se) if se is not None and pd.notna(se) else None
            return float(row["loss"]), se, str(row.get("run", "")) or None
    return None, None, None


def verdict(plan: ContenderPlan, tables: list[pd.DataFrame]) -> dict[str, Any]:
    """verify.json: the plan's predictions beside the measured losses, and whether the forecast held."""
    rows = []
    for c in plan.contenders:
        loss, se, run = measured(c, plan.D, tables)
        error = None if loss is None else c.predicted_loss - loss
        inside = (
            None if loss is None or c.predicted_ci is None else c.predicted_ci[0] <= loss <= c.predicted_ci[1]
        )
        interval = list(c.forecast["interval"]) if c.forecast else None
        inside_forecast = None if loss is None or interval is None else interval[0] <= loss <= interval[1]
        rows.append(
            {
                "bits": c.bits,
                "format": c.format,
                "model": c.model,
                "shape": c.shape,
                "N_quant": c.N_quant,
                "memory_bytes": c.memory_bytes,
                "predicted_loss": c.predicted_loss,
                "predicted_ci": list(c.predicted_ci) if c.predicted_ci else None,
                "measured_loss": loss,
                "measured_se": se,
                "error": error,
                "inside_ci": inside,
                "forecast_interval": interval,
                "inside_forecast": inside_forecast,
                "N_factor": c.forecast.get("N_factor") if c.forecast else None,
                "D_over_N": c.forecast.get("D_over_N") if c.forecast else None,
                "D_over_N_range": c.forecast.get("D_over_N_range") if c.forecast else None,
                "in_grid": c.in_grid,
                "run": run,
            }
        )
    missing = [f"{r['bits']}-bit" for r in rows if r["measured_loss"] is None]
    if missing:
        raise InputError(
            f"runs: no completed run at D={plan.D:.0f} for the {', '.join(missing)} contender(s); "
            "train them first (bitlaw verify plan prints the command)"
        )
    by_bits = {r["bits"]: r for r in rows}
    measured_best = min(rows, key=lambda r: r["measured_loss"])
    predicted = by_bits.get(plan.predicted_winner) if plan.predicted_winner is not None else None
    ranking_pred = [r["bits"] for r in sorted(rows, key=lambda r: r["predicted_loss"])]
    ranking_meas = [r["bits"] for r in sorted(rows, key=lambda r: r["measured_loss"])]
    runner_up = sorted(rows, key=lambda r: r["measured_loss"])[1]
    margin = runner_up["measured_loss"] - measured_best["measured_loss"]
    se = [r["measured_se"] for r in (measured_best, runner_up) if r["measured_se"] is not None]
    scored = [r["inside_forecast"] for r in rows if r["inside_forecast"] is not None]
    regret = None if predicted is None else predicted["measured_loss"] - measured_best["measured_loss"]
    margin_check = _undecided_check(plan, by_bits) if predicted is None else None
    return {
        "envelope": plan.envelope,
        "format": plan.format,
        "budget_bytes": plan.budget_bytes,
        "D": plan.D,
        "undecided_reason": plan.undecided_reason,
        "predicted_margin": plan.margin,
        # the predicted winner's measured loss above the measured winner's: <= WINNER_TOLERANCE counts as held
        "winner_regret": regret,
        "winner_within_tolerance": None if regret is None else regret <= WINNER_TOLERANCE,
        "undecided_check": margin_check,
        "inside_forecast": {"n": len(scored), "inside": int(sum(scored))},
        "predicted_winner": None
        if predicted is None
        else {"bits": predicted["bits"], "model": predicted["model"]},
        "measured_winner": {"bits": measured_best["bits"], "model": measured_best["model"]},
        "winner_held": predicted is not None and predicted["bits"] == measured_best["bits"],
        "measured_margin": margin,
        "measured_margin_se": math.sqrt(sum(s * s for s in se)) if len(se) == 2 else None,
        "ranking_predicted": ranking_pred,
        "ranking_measured": ranking_meas,
        "mean_abs_error": float(np.mean([abs(r["error"]) for r in rows])),
        "max_abs_error": float(np.max([abs(r["error"]) for r in rows])),
        "grid_max_N": plan.grid_max_N,
        "warnings": plan.warnings,
        "contenders": rows,
    }


def other_form(plan: ContenderPlan, result: dict[str, Any], fit: FitFile, name: str) -> dict[str, Any]:
    """Another fitted form's forecast for the same contenders, scored against the same measured losses."""
    fmt = plan.format if plan.format in fit.formats else "all"
    if fmt not in fit.formats:
        fits = ", ".join(fit.formats)
        raise InputError(f"--compare {name}: no fit for format {plan.format!r} (fits: {fits})")
    measured_by_bits = {r["bits"]: r["measured_loss"] for r in result["contenders"]}
    predicted: dict[int, float] = {}
    cannot: dict[int, str] = {}
    for c in plan.contenders:
        try:
            predicted[c.bits] = float(fit.predict(c.N_quant, plan.D, c.P, fmt=fmt))
        except InputError as err:  # e.g. the efficiency form has no eff for a bit width it never saw
            cannot[c.bits] = str(err)
    winner = min(predicted, key=predicted.get) if predicted else None
    return {
        "fit": name,
        "law": fit.law,
        "predicted_loss": {str(b): v for b, v in predicted.items()},
        "cannot_predict": {str(b): why for b, why in cannot.items()},
        # among the contenders it can predict only: a winner it names from a subset is marked as such
        "predicted_winner": winner,
        "winner_held": winner is not None and winner == result["measured_winner"]["bits"],
        "mean_abs_error": float(np.mean([abs(predicted[b] - measured_by_bits[b]) for b in predicted]))
        if predicted else None,
    }


def _undecided_check(plan: ContenderPlan, by_bits: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """Where the plan named no winner: does the measured margin between the predicted leader and runner-up
    lie within the forecast error the plan stated for it (recorded before training)?"""
    margin = plan.margin or {}
    if "forecast_error_nats" not in margin:
        return None
    leader = min(plan.contenders, key=lambda c: c.predicted_loss)
    runner = by_bits.get(margin.get("runner_up_bits"))
    if runner is None or leader.bits not in by_bits:
        return None
    measured_margin = runner["measured_loss"] - by_bits[leader.bits]["measured_loss"]
    return {"leader_bits": leader.bits, "runner_up_bits": runner["bits"],
            "predicted_margin_nats": margin.get("margin_nats"), "measured_margin_nats": measured_margin,
            "stated_error_nats": margin["forecast_error_nats"],
            "within": abs(measured_margin) <= margin["forecast_error_nats"]}


def summarize(budgets: list[dict[str, Any]]) -> dict[str, Any]:
    """Across every tested budget: how many contenders fell inside their forecast interval."""
    n = sum(b["inside_forecast"]["n"] for b in budgets)
    inside = sum(b["inside_forecast"]["inside"] for b in budgets)
    return {"contenders": sum(len(b["contenders"]) for b in budgets), "with_forecast_interval": n,
            "inside_forecast": inside, "share_inside_forecast": inside / n if n else None}
