"""`bitlaw plan`: before any compute, will this grid identify the law, and what will it cost?

The grid (one row per planned run: N, D, P, format, optionally bits, trunk, seed) is simulated K times with a
known law and relative noise σ (``loss·exp(σ·ε)``, as fit.data.simulate does), and every replica is fitted
exactly
as ``bitlaw fit --law precision --by format`` fits a real table (``fit.solve.pipeline.run_fits``).  The
spread of the
K estimates is the sampling distribution a real fit on this grid would have: its 2.5-97.5 percentiles are the
expected 95 % interval.  Each quantized format is planned on its own rows plus the 16-bit anchors, which is
what its per-format fit sees (fit/solve/pipeline.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from fit.answer.caveats import flag_name
from fit.answer.memory import ALL_FORMATS, BitAccounting, Shape
from fit.answer.presets import FormatLaw, LawSource
from fit.answer.recommend import recommend
from fit.data.table import Table, prepare_table
from fit.errors import InputError
from fit.fitfile import LAW_PARAM_KEYS
from fit.law import predict_loss
from fit.solve.pipeline import FitOptions, run_fits
from fit.solve.resampling import anchor_mask
from fit.solve.workers import forked_pool
from fit.study.design import design

DEFAULT_NOISE = 0.005  # 0.5 %: the relative noise fitting.md §4.3 uses for its synthetic identifiability runs
DEFAULT_SIMULATIONS = 40
# One H100 SXM: 989 TFLOP/s dense bf16 at ~40 % model-FLOPs utilisation, a typical well-tuned LLM run.
DEFAULT_FLOPS_PER_S = 4e14
# Presets without A, B, E (1-Bit Wonder publishes only α, β, γ): Epoch's Chinchilla fit (A 482, α 0.348,
# B 2085, β 0.366, E 1.817) has each reducible term at ≈ 0.2·E at N 1e9, D 2e10.  We put the grid's
# geometric centre at that point, so a preset is planned with a Chinchilla-like balance of the three terms.
PRESET_E, PRESET_TERM_SHARE = 1.8, 0.2
# "Identified": at least this share of replicas carry no flag on the parameter, and the 95 % interval is
# narrower than a factor RATIO_LIMIT (A, B: a decade, since their valley is flat even on Epoch's data,
# fitting.md §4.3, where B spans 5.6×; exponents, E, γ: a factor 2).  The offset (Kumar's n) can be ≤ 0, so
# its limit is an absolute width.
UNFLAGGED_SHARE = 0.9
RATIO_LIMIT = {"A": 10.0, "B": 10.0}
DEFAULT_RATIO_LIMIT = 2.0
OFFSET_WIDTH_LIMIT = 1.0
# Flags that say a parameter is not identified, beyond the "name=value" ones (exponent_*, coefficient_*).
FLAG_PARAMS = {
    "E_unidentified": ("E",),
    "gamma_at_bound": ("gamma",),
    "single_P": ("gamma",),
    "no_16bit_anchor": ("gamma",),
    "few_distinct_N": ("A", "alpha", "gamma"),
    "few_distinct_D": ("B", "beta"),
    "collinear_N_D": ("A", "alpha", "B", "beta"),
    "not_converged": ("A", "B", "E", "alpha", "beta", "gamma", "offset"),
}


# ----------------------------------------------------------------------------- the grid


def grid_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a planned grid (N, D, P, format; no losses needed) and add ``bits`` and ``trunk``."""
    table = prepare_table(frame, require=("N", "D", "P", "format"))
    out = table.frame.drop(columns=["loss"], errors="ignore").copy()
    if "bits" not in out:
        # gather's P is bits + block-scale overhead (1.25, 2.25, …) and 16 for bf16
        out["bits"] = np.where(out["P"] >= 16, 16, np.floor(out["P"])).astype(int)
    if "run" not in out:
        out["run"] = [f"run{i}" for i in range(len(out))]
    if "trunk" not in out:
        out["trunk"] = out["run"]  # no branches: every run is its own trunk
    out["trunk"] = out["trunk"].astype(str)
    return out


def quantized_formats(frame: pd.DataFrame) -> list[str]:
    return [str(f) for f in pd.unique(frame["format"][~anchor_mask(frame)])]


# ----------------------------------------------------------------------------- the true law


def truth_params(law: FormatLaw, frame: pd.DataFrame) -> tuple[dict[str, float], str | None]:
    """The law to simulate; A, B, E filled in where the source does not publish them (see PRESET_E)."""
    params = dict(law.params)
    if law.has_loss:
        return params, None
    n_c = float(np.exp(np.log(frame["N"]).mean()))
    d_c = float(np.exp(np.log(frame["D"]).mean()))
    params["E"] = PRESET_E
    params["A"] = PRESET_TERM_SHARE * PRESET_E * n_c ** params["alpha"]
    params["B"] = PRESET_TERM_SHARE * PRESET_E * d_c ** params["beta"]
    note = (
        f"A, B, E are not published for format {law.format}: simulated with E = {PRESET_E:g} and each "
        f"reducible term = {PRESET_TERM_SHARE:g}·E at the grid centre (N {n_c:.3g}, D {d_c:.3g}), Epoch's "
        "Chinchilla balance"
    )
    return params, note


def law_P(law: FormatLaw, frame: pd.DataFrame) -> np.ndarray:
    """The P the law reads: P_w (1BW, bitlaw fits) or the integer bit width (Kumar's preset)."""
    return np.array([law.law_p(int(b), float(p)) for b, p in zip(frame["bits"], frame["P"], strict=True)])


def simulate_losses(
    params: dict[str, float], frame: pd.DataFrame, P: np.ndarray, noise: float, k: int, seed: int
) -> np.ndarray:
    """(k, rows) losses: the law's loss times exp(σ·ε), ε standard normal, independent per run and replica."""
    clean = np.asarray(predict_loss(params, frame["N"].to_numpy(), frame["D"].to_numpy(), P), dtype=float)
    if not np.all(np.isfinite(clean) & (clean > 0)):
        raise InputError(
            "--law/--preset: the law gives no finite loss on some rows of the grid (P below offset?)"
        )
    rng = np.random.default_rng(seed)
    return clean[None, :] * np.exp(noise * rng.standard_normal((k, len(clean))))


def _fit_one(frame: pd.DataFrame, opts: FitOptions) -> dict[str, dict[str, Any]]:
    table = Table(frame, {c: c for c in ("N", "D", "loss", "P", "format", "run")}, len(frame), len(frame))
    return run_fits(table, opts)["fits"]


def fit_replicas(
    frame: pd.DataFrame, P: np.ndarray, losses: np.ndarray, opts: FitOptions, workers: int = 1
) -> list[dict[str, Any]]:
    """One ``run_fits`` per replica; returns each replica's single fit entry."""
    frames = []
    for row in losses:
        sim = frame[["run", "format", "N", "D"]].copy()
        sim["P"], sim["loss"] = P, row
        frames.append(sim)
    if workers <= 1 or len(frames) == 1:
        fits = [_fit_one(f, opts) for f in frames]
    else:
        # forked, as fit/solve/bootstrap.py's: numpy/scipy already imported; Ctrl-C terminates the workers
        with forked_pool(workers) as pool:
            fits = pool.starmap(_fit_one, [(f, opts) for f in frames])
    return [next(iter(f.values())) for f in fits]


# ----------------------------------------------------------------------------- summaries


def flagged_params(flag: str) -> set[str]:
    """The parameters a fit flag says are not identified."""
    name = flag_name(flag)
    named = set(FLAG_PARAMS.get(name, ()))
    if name.startswith(("exponent_", "coefficient_")):
        match = re.search(r":\s*(\w+)=", flag)
        if match:
            named.add(match.group(1))
        if "gamma" in flag:  # exponent_at_zero on alpha: "the N term (and gamma ...) is not identified"
            named.add("gamma")
    return named


def summarise_parameters(truth: dict[str, float], entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    names = [k for k in LAW_PARAM_KEYS if k in entries[0]]
    for name in names:
        values = np.array([float(e[name]) for e in entries])
        finite = values[np.isfinite(values)]
        lo, hi = np.percentile(finite, [2.5, 97.5]) if finite.size else (math.nan, math.nan)
        unflagged = np.mean([not any(name in flagged_params(f) for f in e["flags"]) for e in entries])
        if name == "offset":
            narrow = bool(hi - lo <= OFFSET_WIDTH_LIMIT)
        else:
            limit = RATIO_LIMIT.get(name, DEFAULT_RATIO_LIMIT)
            narrow = bool(lo > 0 and hi / lo <= limit)
        value = truth.get(name)
        reasons = []
        if finite.size != values.size:
            reasons.append("non-finite estimates")
        if unflagged < UNFLAGGED_SHARE:
            flagged = sorted({flag_name(f) for e in entries for f in e["flags"] if name in flagged_params(f)})
            reasons.append(f"flagged in {100 * (1 - unflagged):.0f} % of replicas ({', '.join(flagged)})")
        if not narrow:
            reasons.append("interval too wide")
        out[name] = {
            "why_not": "; ".join(reasons) or None,
            "interval": [float(lo), float(hi)],
            "identified": not reasons,
            "truth": value,
            "covers_truth": None if value is None else bool(lo <= value <= hi),
            "unflagged_share": float(unflagged),
        }
    return out


def summarise_flags(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every flag that fired in some replica: its name, the share of replicas, one example line."""
    seen: dict[str, list[str]] = {}
    for entry in entries:
        for name in {flag_name(f): f for f in entry["flags"]}.items():
            seen.setdefault(name[0], []).append(name[1])
    return [
        {"name": name, "share": len(lines) / len(entries), "example": lines[0]}
        for name, lines in sorted(seen.items(), key=lambda kv: -len(kv[1]))
    ]


def best_bits_match(
    truth: FormatLaw,
    entries: list[dict[str, Any]],
    fmt: str,
    bits: Sequence[int],
    budget_bytes: float,
    tokens: float,
    shapes: list[Shape],
    n_convention: str,
) -> dict[str, Any]:
    """Share of replicas whose best bit width at ``budget_bytes`` (``recommend``'s answer) is the truth's.

    At fixed D the winner maximises N_eff, whatever A, α, B, β and D are (method.md §7): ``tokens`` only sets
    the printed loss, so the grid's largest D is used.  A law can name no winner (every bit width predicts
    the same loss, e.g. α so large that the N term vanishes: a weak fit, or a replica at high noise); such a
    replica counts as "no winner" (``no_winner_share``), and agrees with a truth that names none either.
    """
    info: dict[str, Any] = {"memory_bytes": budget_bytes, "tokens": tokens, "bits": list(bits)}
    if fmt not in ALL_FORMATS:
        return {**info, "share": None, "reason": f"format {fmt!r} has no bit accounting in fit.answer.memory"}
    acct = BitAccounting()

    def best(law: FormatLaw) -> int | None:
        source = LawSource("plan", {fmt: law}, n_convention)
        winner = recommend(source, budget_bytes, tokens, shapes, list(bits), fmt, acct).best
        return None if winner is None else winner.bits

    want = best(truth)
    got = [
        best(replace(truth, params={k: float(e[k]) for k in LAW_PARAM_KEYS if k in e}, samples=None))
        for e in entries
    ]
    counts = {str(b): got.count(b) / len(got) for b in sorted({b for b in got if b is not None})}
    return {
        **info,
        "truth_bits": want,  # None: the simulated law itself names no winner
        "share": got.count(want) / len(got),
        "replica_bits": counts,
        "no_winner_share": got.count(None) / len(got),
    }


# ----------------------------------------------------------------------------- compute


def flops_per_token(frame: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Training FLOPs per token per run, and which formula was used.

    Kaplan et al. 2020 (Table 1): forward = 2·N_matmul + 2·n_layers·n_ctx·d_model per token, training = 3×
    forward, so 6·N + 6·n_layers·seq_len·d_model (the attention scores and the weighted sum, not causally
    halved).  N_matmul adds the untied output head (vocab·d_model) to the table's N (N_quant, block linears);
    the embedding lookup costs no FLOPs.  Without the shape columns only 6·N is known.
    """
    base = 6.0 * frame["N"].to_numpy(dtype=float)
    have = {
        c: c in frame and frame[c].notna().all()
        for c in ("model.d_model", "model.n_layers", "train.seq_len", "model.vocab_size")
    }
    parts = ["6·N"]
    if have["model.d_model"] and have["model.vocab_size"]:
        base = base + 6.0 * frame["model.vocab_size"].to_numpy(float) * frame["model.d_model"].to_numpy(float)
        parts.append("6·vocab·d_model (output head)")
    if have["model.d_model"] and have["model.n_layers"] and have["train.seq_len"]:
        attn = frame["model.n_layers"].to_numpy(float) * frame["train.seq_len"].to_numpy(float)
        base = base + 6.0 * attn * frame["model.d_model"].to_numpy(float)
        parts.append("6·n_layers·seq_len·d_model (attention)")
    else:
        parts.append("attention term omitted: no model.n_layers/model.d_model/train.seq_len columns")
    return base, " + ".join(parts[:-1] + [parts[-1]]) + " per token (Kaplan et al. 2020)"


def compute_cost(
    frame: pd.DataFrame, flops_per_s: float = DEFAULT_FLOPS_PER_S, tokens_per_s: float | None = None,
    rate_label: str | None = None,
) -> dict[str, Any]:
    """Runs, trunks, tokens, FLOPs and hours.  A trunk trains once to its largest D; its branches share it.
    ``separate_runs_*`` and ``saving``: the cost of training every row as its own run to its D, and the
    share of FLOPs the branches save against that.  ``rate_label`` names the throughput (e.g. an MFU)."""
    per_token, formula = flops_per_token(frame)
    work = frame.assign(_fpt=per_token)
    trunks = work.groupby("trunk", sort=False).agg(D=("D", "max"), fpt=("_fpt", "max"))
    if "train_tokens" in work:  # a planned experiment: each branch adds its cooldown to its trunk's D_max
        tokens = float(work["train_tokens"].sum())
        flops = float((work["train_tokens"] * work["_fpt"]).sum())
    else:
        tokens = float(trunks["D"].sum())
        flops = float((trunks["D"] * trunks["fpt"]).sum())
    # the same rows trained as separate runs, one per D: what the branches save
    separate_tokens = float(work["D"].sum())
    separate_flops = float((work["D"] * work["_fpt"]).sum())
    if tokens_per_s is not None:
        hours, rate = tokens / tokens_per_s / 3600, f"{tokens_per_s:g} tokens/s"
    else:
        hours, rate = flops / flops_per_s / 3600, rate_label or f"{flops_per_s:g} FLOP/s"
    return {
        "runs": int(frame["run"].nunique()) if "run" in frame else int(len(frame)),  # a run: several D rows
        "trunks": int(len(trunks)),
        "tokens": tokens,
        "flops": flops,
        "flops_formula": formula,
        "hours": hours,
        "throughput": rate,
        "separate_runs_tokens": separate_tokens,
        "separate_runs_flops": separate_flops,
        "separate_runs_hours": hours * separate_flops / flops if flops else 0.0,
        "saving": 1.0 - flops / separate_flops if separate_flops else 0.0,
    }


def seed_spread(frame: pd.DataFrame) -> float | None:
    """Pooled std of log loss across seeds of one (format, N, D, P) cell: the relative run-to-run noise."""
    if "seed" not in frame or "loss" not in frame:
        return None
    keys = [c for c in ("format", "N", "D", "P") if c in frame]
    logs = np.log(pd.to_numeric(frame["loss"], errors="coerce"))
    groups = logs.groupby([frame[k] for k in keys])
    dof = (groups.count() - 1).clip(lower=0)
    if dof.sum() < 1:
        return None
    return float(np.sqrt((groups.var(ddof=1).fillna(0) * dof).sum() / dof.sum()))


# ----------------------------------------------------------------------------- the plan


def plan(
    grid: pd.DataFrame,
    source: LawSource,
    opts: FitOptions,
    noise: float = DEFAULT_NOISE,
    simulations: int = DEFAULT_SIMULATIONS,
    seed: int = 0,
    budget_bytes: float = 8e9,
    shapes: list[Shape] | None = None,
    flops_per_s: float = DEFAULT_FLOPS_PER_S,
    tokens_per_s: float | None = None,
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
    tokens: float | None = None,
) -> dict[str, Any]:
    """The whole plan as a JSON-ready dict: ``formats[FMT]`` = parameters, flags, best_bits, compute;
    ``design`` = fit/study/design.py's check of the grid's N span and of the contenders at ``budget_bytes``
    and ``tokens`` (default: the grid's largest D)."""
    if not (math.isfinite(noise) and noise >= 0):
        raise InputError(f"--noise: {noise} is not allowed; use a relative noise >= 0, e.g. 0.005")
    if simulations < 2:
        raise InputError(f"--simulations: {simulations} is not allowed; use 2 or more (e.g. 40)")
    formats = quantized_formats(grid)
    if not formats:
        raise InputError("TABLE: every row is a 16-bit anchor (format none/bf16); plan needs quantized runs")
    notes = [source.note] if source.note else []
    out: dict[str, Any] = {}
    anchors = anchor_mask(grid)
    covered = [f for f in formats if f in source.laws or "all" in source.laws]
    for fmt in formats:
        if fmt not in covered:
            notes.append(f"format {fmt}: {source.name} has no law for it; not planned (its runs are costed)")
    if not covered:
        allowed = ", ".join(source.laws)
        raise InputError(f"--law/--preset: {source.name} has laws for {allowed}, none of the grid's formats")
    # before the simulations: cheap, and its InputErrors (a budget that holds no model) come first
    checked = design(grid, source, budget_bytes, tokens, shapes, covered)
    for i, fmt in enumerate(covered):
        if progress:
            progress(f"format {fmt}: {simulations} replicas")
        rows = grid[(grid["format"] == fmt).to_numpy() | anchors].reset_index(drop=True)
        law = source.law(fmt)
        params, note = truth_params(law, rows)
        notes += [note] if note else []
        truth = replace(law, params=params, samples=None)
        P = law_P(law, rows)
        losses = simulate_losses(params, rows, P, noise, simulations, seed + 1000 * i)
        fmt_opts = replace(opts, offset=opts.offset or "offset" in params)
        entries = fit_replicas(rows, P, losses, fmt_opts, workers)
        bits = sorted({int(b) for b in rows["bits"]})
        best = (
            best_bits_match(
                truth, entries, fmt, bits, budget_bytes, float(rows["D"].max()), shapes, source.n_convention
            )
            if shapes
            else {"share": None, "reason": "no model family given"}
        )
        out[fmt] = {
            "parameters": summarise_parameters(params, entries),
            "flags": summarise_flags(entries),
            "best_bits": best,
            "compute": compute_cost(rows, flops_per_s, tokens_per_s),
            "n_rows": int(len(rows)),
            "n_anchor_rows": int(anchors.sum()),
        }
    return {
        "source": source.name,
        "noise": noise,
        "simulations": simulations,
        "seed": seed,
        "formats": out,
        "design": checked,
        "compute": compute_cost(grid, flops_per_s, tokens_per_s),
        "notes": notes,
    }
