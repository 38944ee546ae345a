"""``bitlaw plan (TABLE | experiment=NAME [overrides…]) (--law FIT.json | --preset NAME)``: before any
compute, will this grid identify the law, and what will it cost (fit/study/plan.py does the work)?

An experiment is expanded by sweep/grid.py, here in the CLI layer, because fit/ must not depend on Hydra or
sweep/: its ``hydra.sweeper.params`` and any swept command-line overrides make the Cartesian product
BasicSweeper would launch, and every job is composed from conf/ as ``python -m sweep -m`` would compose it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from bitlaw.commands._preflight import preflight, preflight_lines
from fit.errors import InputError

FIT_GRIDS = ("coarse", "default", "fine")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "grid",
        nargs="+",
        metavar="TABLE | experiment=NAME [overrides...]",
        help="a table of planned runs (N, D, P, format[, bits, trunk, seed]) or a Hydra experiment",
    )
    parser.add_argument("--law", metavar="FIT.json", help="a precision-law fit.json to simulate from")
    parser.add_argument("--preset", help="published constants instead of a fit (see `bitlaw recommend`)")
    parser.add_argument(
        "--noise", type=float, help="relative loss noise sigma (default: the fit's seed spread, else 0.005)"
    )
    parser.add_argument("--simulations", type=int, default=40, metavar="K", help="replicas (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="fit worker processes (default 2)")
    parser.add_argument(
        "--grid-starts", choices=FIT_GRIDS, help="fit start grid (default: the fit.json's, else default)"
    )
    parser.add_argument("--memory", default="8GB", help="budget for the best-bit-width check (default 8GB)")
    parser.add_argument("--arch", default="llama3", help="model family for that check (default llama3)")
    parser.add_argument(
        "--tokens", help="D of the design check's contenders (each bit width's largest model within "
        "--memory; default: the grid's largest D), e.g. 1e6 or 150B"
    )
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument(
        "--flops-per-s", type=float, help="throughput for hours (default 4e14: one H100 at ~40%% MFU)"
    )
    rate.add_argument(
        "--tokens-per-s", type=float, help="throughput for hours, in training tokens per second"
    )
    rate.add_argument(
        "--mfu", type=float, help="throughput for GPU-hours as a model-FLOPs utilisation (e.g. 0.4, or one "
        "measured: metrics.jsonl's mfu) of --peak-flops"
    )
    parser.add_argument(
        "--peak-flops", type=float, default=989e12, help="one GPU's peak for --mfu (default 989e12: "
        "H100/H200 SXM dense bf16)"
    )
    parser.add_argument(
        "--cost", action="store_true", help="only the compute cost (runs, trunks, tokens, FLOPs, hours, the "
        "branches' saving): no law needed, nothing simulated"
    )
    parser.add_argument(
        "--gpu-memory", default="80GB", help="an experiment's preflight: one GPU's memory each job's peak "
        "must fit (default 80GB); its hours are checked at --mfu (default 0.4) against its Slurm time"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


# ----------------------------------------------------------------------------- the grid


def experiment_grid(overrides: list[str]) -> Any:
    """One row per job of the experiment: N (N_quant), D (tokens seen), P (P_w), format, bits, shape."""
    import pandas as pd
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from sweep import contract, grid

    try:
        parsed = grid.parse(overrides)
    except HydraException as err:
        raise InputError(f"overrides: {str(err).splitlines()[0]}") from None
    try:
        with grid.composing():
            jobs = grid.sweep_grid(parsed).jobs()
            rows = [row for index, cfg in enumerate(jobs) for row in _job_row(cfg, contract, f"job{index}")]
    except (HydraException, OmegaConfBaseException) as err:
        reason = (str(err).strip() or str(err.__cause__ or "") or type(err).__name__).splitlines()[0]
        raise InputError(
            f"experiment: cannot compose {' '.join(overrides)} ({reason}); "
            f"experiments: {', '.join(grid.experiments())}"
        ) from None
    return pd.DataFrame(rows)


def _job_row(cfg: Any, contract: Any, trunk: str) -> list[dict[str, Any]]:
    """The job's rows: one per token budget it yields (its WSD branches, then the trunk's own D), sharing a
    ``trunk``; ``train_tokens`` is what each row trains beyond what its trunk already did (the branch's
    cooldown), so a grid's cost counts the trunk once."""
    from sweep.branches import BranchError, plan_branches

    m, q, t = cfg.model, cfg.quant, cfg.train
    counts = contract.param_counts(m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.ffn_dim, m.vocab_size)
    # as sweep/train.py: the target tokens, rounded up to whole batches (D = tokens seen, gather's D)
    target = int(float(t.tokens)) if t.tokens is not None else int(t.tokens_per_param * counts["N_quant"])
    steps = max(1, math.ceil(target / t.batch_tokens))
    base = {
        "format": str(q.format),
        "bits": int(q.bits) if q.format != "none" else 16,
        "P": contract.bits_per_weight(q.format, int(q.bits), int(q.block_size), bool(q.binary_mean)),
        "N": float(counts["N_quant"]),
        "seed": int(t.seed),
        "model.d_model": m.d_model,
        "model.n_layers": m.n_layers,
        "model.vocab_size": m.vocab_size,
        "train.seq_len": t.seq_len,
    }
    rows = [{**base, "D": float(steps * t.batch_tokens), "trunk": trunk,
             "train_tokens": float(steps * t.batch_tokens)}]
    try:  # the schedule sweep/train.py trains: each branch forks where its decay starts
        branches = plan_branches(t, str(q.format), q.qat_start)
    except BranchError as err:
        raise InputError(str(err)) from None
    for branch in branches:
        rows.append({**base, "D": float(branch.steps * t.batch_tokens), "trunk": trunk,
                     "train_tokens": float((branch.steps - branch.fork_step) * t.batch_tokens)})
    return rows


def load_grid(items: list[str]) -> tuple[Any, str]:
    from fit.data.table import read_frame
    from fit.study.plan import grid_table

    if items[0].startswith("experiment="):
        return grid_table(experiment_grid(items)), " ".join(items)
    if len(items) > 1 or "=" in items[0]:
        raise InputError(
            f"TABLE | experiment=NAME: got {' '.join(items)!r}; give one table file, or experiment=NAME "
            "first followed by Hydra overrides"
        )
    return grid_table(read_frame(items[0])), items[0]


# ----------------------------------------------------------------------------- the law and its noise


def default_noise(fit: Any) -> tuple[float, str]:
    """The fit's recorded seed spread, else the spread across seeds in its data table, else 0.5 %."""
    from fit.data.table import read_frame
    from fit.study.plan import DEFAULT_NOISE, seed_spread

    recorded = fit.data.get("seed_spread")
    if isinstance(recorded, int | float) and recorded > 0:
        return float(recorded), f"the seed spread recorded in {fit.path}"
    data = fit.data.get("data") or {}
    path = Path(str(data.get("path", "")))
    if path.is_file():
        try:
            frame = read_frame(path)
        except InputError:
            frame = None
        if frame is not None:
            names = {k: v for k, v in (fit.data.get("columns") or {}).items() if v in frame}
            frame = frame.rename(columns={v: k for k, v in names.items()})
            spread = seed_spread(frame)
            if spread:
                return spread, f"the seed spread of {path}"
    return DEFAULT_NOISE, "default; the fit records no seed spread"


def fit_options(fit: Any, source: Any, grid: str | None) -> Any:
    """Replicas are fitted as `bitlaw fit --law precision --by format` fitted the source (its objective)."""
    from fit.solve.objective import Objective
    from fit.solve.pipeline import FitOptions

    common = {"law": "precision", "by": "format", "extrapolate": False, "profile": False, "progress": False}
    # extrapolation and the γ profile are extra fits that change neither the parameters nor the flags
    if fit is None:
        tie = all(law.params.get("alpha") == law.params.get("beta") for law in source.laws.values())
        return FitOptions(tie=tie, grid=grid or "default", **common)
    d, options = fit.data, fit.data.get("options") or {}
    objective = Objective(
        str(d.get("loss", "huber")),
        float(d.get("delta", 1e-3)),
        str(d.get("space", "log")),
        float(d.get("asym_weight") or 10.0),
    )
    return FitOptions(
        tie=bool(options.get("tie_exponents")),
        offset=bool(options.get("offset")),
        objective=objective,
        grid=grid or str(options.get("grid", "default")),
        **common,
    )


def _check(args: argparse.Namespace) -> None:
    if args.noise is not None and not (math.isfinite(args.noise) and args.noise >= 0):
        raise InputError(f"--noise: {args.noise} is not allowed; use a relative noise >= 0, e.g. 0.005")
    if args.simulations < 2:
        raise InputError(f"--simulations: {args.simulations} is not allowed; use 2 or more (e.g. 40)")
    if args.workers < 1:
        raise InputError(f"--workers: {args.workers} is not allowed; use 1 or more")
    _tokens(args)  # a bad --tokens is refused before the grid is composed
    if args.mfu is not None and not (math.isfinite(args.mfu) and 0 < args.mfu <= 1):
        raise InputError(f"--mfu: {args.mfu} is not allowed; use a fraction in (0, 1], e.g. 0.4")
    for name in ("flops_per_s", "tokens_per_s", "peak_flops"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"--{name.replace('_', '-')}: {value} is not allowed; use a positive rate")


def run(args: argparse.Namespace) -> int:
    from bitlaw.commands._options import load_source
    from fit.answer.shapes import resolve_arch
    from fit.fitfile import load_fit
    from fit.study.plan import DEFAULT_FLOPS_PER_S, plan
    from fit.units import parse_memory

    _check(args)
    flops_per_s, rate_label = args.flops_per_s or DEFAULT_FLOPS_PER_S, None
    if args.mfu is not None:  # GPU-hours at a stated or measured MFU
        flops_per_s = args.mfu * args.peak_flops
        rate_label = f"{100 * args.mfu:.3g} % MFU of {args.peak_flops:g} FLOP/s per GPU (GPU-hours)"
    if args.cost:
        from fit.study.plan import compute_cost

        grid, label = load_grid(args.grid)
        cost = compute_cost(grid, flops_per_s, args.tokens_per_s, rate_label)
        checked = _design(args, grid)
        pre = preflight(args.grid, args.gpu_memory, args.mfu, args.peak_flops)
        text = [f"plan: {label}; compute only (--cost)", *_design_lines(checked), *_cost_lines(cost),
                *preflight_lines(pre)]
        print(json.dumps({"grid": label, "compute": cost, "design": checked, **pre}, indent=2) if args.json
              else "\n".join(text))
        return 0
    if bool(args.law) == bool(args.preset):
        raise InputError("--law/--preset: give exactly one (a fit.json, or a preset such as 1bw-kmeans), or "
                         "--cost for the compute cost alone")
    started = time.perf_counter()
    source = load_source(args.law, args.preset)
    fit = load_fit(args.law) if args.law else None
    noise, noise_from = (
        (args.noise, "--noise")
        if args.noise is not None
        else (default_noise(fit) if fit else (0.005, "default"))
    )
    budget = parse_memory(args.memory)
    if len(budget) != 1:
        raise InputError(f"--memory: {args.memory!r} is a list; plan checks one budget (e.g. 8GB)")
    shapes = resolve_arch(args.arch)
    grid, label = load_grid(args.grid)
    report = plan(
        grid,
        source,
        fit_options(fit, source, args.grid_starts),
        noise,
        args.simulations,
        args.seed,
        budget[0],
        shapes,
        flops_per_s,
        args.tokens_per_s,
        args.workers,
        progress=None if args.json or not sys.stderr.isatty() else lambda m: print(m, file=sys.stderr),
        tokens=_tokens(args),
    )
    report.update(grid=label, noise_from=noise_from, arch=args.arch, seconds=time.perf_counter() - started)
    pre = preflight(args.grid, args.gpu_memory, args.mfu, args.peak_flops)
    report.update(pre)
    print(json.dumps(report, indent=2, allow_nan=False, default=str) if args.json else
          "\n".join([render(report), *preflight_lines(pre)]))
    return 0


# ----------------------------------------------------------------------------- the design check


def _tokens(args: argparse.Namespace) -> float | None:
    from fit.units import parse_tokens

    return None if args.tokens is None else parse_tokens(args.tokens)


def _design(args: argparse.Namespace, grid: Any) -> dict[str, Any]:
    """--cost's design check (fit/study/design.py): the grid's N span always; its contenders when a law is
    given (--law/--preset: recommend needs one to choose them), at --memory and --tokens."""
    from fit.study.design import design

    if not (args.law or args.preset):
        return design(grid)
    from bitlaw.commands._options import load_source
    from fit.answer.shapes import resolve_arch
    from fit.units import parse_memory

    budget = parse_memory(args.memory)
    if len(budget) != 1:
        raise InputError(f"--memory: {args.memory!r} is a list; plan checks one budget (e.g. 8GB)")
    return design(grid, load_source(args.law, args.preset), budget[0], _tokens(args), resolve_arch(args.arch))


def _design_lines(block: dict[str, Any]) -> list[str]:
    from fit.study.design import render_design

    return render_design(block)


# ----------------------------------------------------------------------------- text


def _compute_line(c: dict[str, Any]) -> str:
    from fit.units import format_count

    return (
        f"{c['runs']} runs, {c['trunks']} trunks, {format_count(c['tokens'])} tokens, "
        f"{c['flops']:.3g} FLOPs, "
        f"{c['hours']:.3g} h at {c['throughput']}"
    )


def _cost_lines(c: dict[str, Any]) -> list[str]:
    from fit.units import format_count

    return [f"compute, whole grid: {_compute_line(c)}", f"  FLOPs = {c['flops_formula']}",
            f"  one run per D instead of branches: {format_count(c['separate_runs_tokens'])} tokens, "
            f"{c['separate_runs_flops']:.3g} FLOPs, {c['separate_runs_hours']:.3g} h; the branches save "
            f"{100 * c['saving']:.0f} %"]


def render(report: dict[str, Any]) -> str:
    from fit.units import format_bytes

    lines = [
        f"plan: {report['grid']}; law {report['source']}; noise {100 * report['noise']:.3g} % "
        f"({report['noise_from']}); {report['simulations']} simulated replicas, each fitted as `bitlaw fit "
        "--law precision --by format`"
    ]
    lines += _design_lines(report["design"])
    for fmt, f in report["formats"].items():
        lines += ["", f"format {fmt}: {f['n_rows']} runs with the {f['n_anchor_rows']} 16-bit anchors"]
        lines.append(f"  {'param':<7} {'truth':>11}  {'expected 95% interval':<27} identified")
        for name, p in f["parameters"].items():
            lo, hi = p["interval"]
            truth = "" if p["truth"] is None else f"{p['truth']:.4g}"
            mark = "yes" if p["identified"] else f"NO: {p['why_not']}"
            miss = "" if p["covers_truth"] in (None, True) else "  (misses the truth)"
            lines.append(f"  {name:<7} {truth:>11}  [{lo:<11.4g}, {hi:<11.4g}]  {mark}{miss}")
        for flag in f["flags"]:
            lines.append(
                f"  flag {flag['name']} in {100 * flag['share']:.0f} % of replicas ({flag['example']})"
            )
        if not f["flags"]:
            lines.append("  flags: none fired")
        b = f["best_bits"]
        if b.get("share") is None:
            lines.append(f"  best bit width: not checked ({b.get('reason')})")
        else:
            spread = [f"{k}-bit {100 * v:.0f} %" for k, v in b["replica_bits"].items()]
            if b.get("no_winner_share"):  # a replica whose fitted law ties every bit width
                spread.append(f"no winner {100 * b['no_winner_share']:.0f} %")
            truth = "no winner" if b["truth_bits"] is None else f"{b['truth_bits']}-bit"
            lines.append(
                f"  best bit width at {format_bytes(b['memory_bytes'])} ({report['arch']}): "
                f"truth {truth}; {100 * b['share']:.0f} % of replicas agree ({', '.join(spread)})"
            )
        lines.append(f"  compute of these runs: {_compute_line(f['compute'])}")
    c = report["compute"]
    lines += ["", *_cost_lines(c)]
    lines += [f"note: {n}" for n in report["notes"]]
    lines.append(f"({report['seconds']:.1f} s)")
    return "\n".join(lines)
