"""``bitlaw fit DATA -o fit.json``: fit a scaling law to a table and write fit.json (docs/method.md §6).

The heavy imports (pandas, scipy) happen inside :func:`run`, so ``bitlaw fit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from bitlaw.commands._options import (
    N_CONVENTIONS,
    add_drop_early,
    check_output,
    drop_early_line,
    write_failed,
)
from fit.errors import InputError

# mirrors fit.law.LAWS without importing numpy
LAWS = ("chinchilla", "precision", "efficiency", "penalty", "coupled")
LOSSES = ("huber", "mse", "mae", "asymmetric")  # mirrors fit.solve.optimize.LOSSES without importing scipy
SPACES = ("log", "raw")
GRIDS = ("coarse", "default", "fine")
# The fewest resamples a 95 % percentile interval can rest on: its ends are the 2.5th and 97.5th percentiles,
# and only from B = 40 on does each tail hold a whole draw (40 x 2.5 % = 1).  With fewer, the ends are
# interpolated between the smallest (largest) draws: --bootstrap 1 printed a zero-width "95 % CI" that
# excluded its own estimate, and B = 19 gives the draws' range, a ~90 % interval (issue 28 item 8).
MIN_BOOTSTRAP = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="runs table: .csv, .tsv, .jsonl or .parquet")
    parser.add_argument(
        "-o", "--output", default="fit.json", help="where to write fit.json (default: fit.json)"
    )
    parser.add_argument(
        "--law",
        default="chinchilla",
        choices=LAWS,
        help="chinchilla: E + A/N^alpha + B/D^beta; precision: N -> N(1 - exp(-P/gamma)); efficiency: "
        "N -> N*eff(P), one eff per P (1 at P >= 16); penalty: chinchilla + C*exp(-P/gamma)*D^dD/N^dN; "
        "coupled: E + (A/N_eff^alpha + B/D^beta)^k (N_eff with a P column, else N; k = 1 is precision)",
    )
    parser.add_argument(
        "--two-stage",
        action="store_true",
        help="fit chinchilla on the 16-bit anchors (P >= 16), then gamma / effs / penalty with it frozen",
    )
    parser.add_argument(
        "--columns",
        metavar="MAP",
        help="map names to your columns: N=col,D=col,loss=col[,P=col,format=col,run=col]",
    )
    parser.add_argument(
        "--n-convention",
        choices=N_CONVENTIONS,
        help="take N from N_quant / N_nonembed / N_total (a `bitlaw gather` table); default: N",
    )
    parser.add_argument(
        "--where",
        metavar="EXPR",
        help="filter on the input's column names (==, !=, <, <=, >, >=, in [..], and/or/not; never run as "
        "code), e.g. 'D > 1e9' or '`model.d_model` >= 64'",
    )
    parser.add_argument(
        "--drop-invalid",
        action="store_true",
        help="drop rows with missing, non-numeric or non-positive N, D, loss, P (counted)",
    )
    add_drop_early(parser)
    parser.add_argument(
        "--by",
        choices=("format",),
        help="one fit per format; format none/bf16 rows are a shared 16-bit anchor of each",
    )
    parser.add_argument(
        "--shared",
        action="store_true",
        help="with --by format: shared A, B, E, alpha, beta; gamma (effs, penalty) per format",
    )
    parser.add_argument("--tie-exponents", action="store_true", help="fit alpha = beta")
    parser.add_argument("--offset", action="store_true", help="fit an exponent offset: exp(-P/gamma + n)")
    parser.add_argument("--loss", default="huber", choices=LOSSES, help="per-point loss (default: huber)")
    parser.add_argument("--delta", type=float, default=1e-3, help="Huber threshold (default: 1e-3)")
    parser.add_argument(
        "--asym-weight",
        type=float,
        default=10.0,
        help="asymmetric loss: weight on over-predictions (default: 10)",
    )
    parser.add_argument(
        "--space", default="log", choices=SPACES, help="residuals of log loss (default) or of raw loss"
    )
    parser.add_argument(
        "--grid",
        default="default",
        choices=GRIDS,
        help="start grid: coarse (243), default (Epoch's 4500), fine (~88k); x gamma grid",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="K",
        help="K bootstrap refits (0: none, else >= 40), resampling trunks (`trunk`[+`seed`]), else runs, "
        "else rows; 95%% CIs",
    )
    parser.add_argument(
        "--bootstrap-strata",
        choices=("point", "none"),
        default="point",
        help="point (default): resample within each design point (format, P), so every resample keeps the "
        "design's anchors; none: across the whole table",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--workers", type=int, default=2, help="bootstrap worker processes (default: 2)")
    parser.add_argument(
        "--progress", action="store_true", help="show the bootstrap progress bar even if not a tty"
    )
    parser.add_argument(
        "--no-backtest", action="store_true",
        help="skip the backtest that measures the forecast error model (then the stated default is used)",
    )


def _check_numbers(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.delta) and args.delta > 0):
        raise InputError(f"--delta: {args.delta} is not allowed; it must be a positive number (e.g. 1e-3)")
    if not (math.isfinite(args.asym_weight) and args.asym_weight > 0):
        raise InputError(f"--asym-weight: {args.asym_weight} is not allowed; it must be a positive number")
    if args.bootstrap < 0 or 0 < args.bootstrap < MIN_BOOTSTRAP:
        raise InputError(
            f"--bootstrap: {args.bootstrap} is not allowed; use 0 (off) or at least {MIN_BOOTSTRAP} "
            "resamples (a 95 % interval's 2.5/97.5 percentiles need >= 1 draw in each tail: 40 x 2.5 % = 1)"
        )
    if args.workers < 1:
        raise InputError(f"--workers: {args.workers} is not allowed; use 1 or more")
    if args.by is None and args.shared:
        raise InputError("--shared needs --by format")
    if args.offset and args.law != "precision":
        raise InputError(f"--offset: only with --law precision, not --law {args.law}")
    if args.two_stage and args.law == "chinchilla":
        raise InputError(
            "--two-stage: needs --law precision, efficiency or penalty (chinchilla has no stage 2)"
        )
    output = Path(args.output)
    if output.suffix.lower() != ".json":
        raise InputError(f"-o/--output: {output} must end in .json")
    check_output(output)  # before the fit and its bootstrap, not after them


def run(args: argparse.Namespace) -> int:
    from fit.data.table import load_table, parse_columns
    from fit.fitfile import infer_n_convention, sha256_of, write_fit
    from fit.solve.objective import Objective
    from fit.solve.pipeline import FitOptions, run_fits
    from fit.solve.resampling import bootstrap_units

    _check_numbers(args)
    columns = parse_columns(args.columns)
    uses_p = args.law != "chinchilla" and (args.law != "coupled" or _has_p_column(args.data, columns))
    require = ("N", "D", "loss") + (("P",) if uses_p else ()) + (("format",) if args.by else ())
    table = load_table(args.data, columns, args.where, require, args.drop_invalid, args.n_convention,
                       args.drop_early)
    _refuse_silent_pooling(args, table.frame)
    objective = Objective(args.loss, args.delta, args.space, args.asym_weight)
    opts = FitOptions(
        law=args.law,
        by=args.by,
        shared=args.shared,
        tie=args.tie_exponents,
        offset=args.offset,
        objective=objective,
        grid=args.grid,
        bootstrap=args.bootstrap,
        seed=args.seed,
        workers=args.workers,
        progress=True if args.progress else None,
        two_stage=args.two_stage,
        stratify=args.bootstrap_strata == "point",
    )
    result = run_fits(table, opts)
    attach_error_models(result["fits"], table, opts, skip=args.no_backtest)
    data_path = Path(args.data)
    document: dict[str, Any] = {
        "law": args.law,
        "loss": args.loss,
        "delta": args.delta,
        "space": args.space,
        "asym_weight": args.asym_weight if args.loss == "asymmetric" else None,
        "columns": table.columns,
        "n_convention": args.n_convention or infer_n_convention(table.frame),
        "by": args.by,
        "options": {
            "tie_exponents": args.tie_exponents,
            "offset": args.offset,
            "shared": args.shared,
            "two_stage": args.two_stage,
            "grid": args.grid,
            "bootstrap": args.bootstrap,
            "bootstrap_strata": args.bootstrap_strata,
            "seed": args.seed,
            "anchor": "rows of format none/bf16 with P >= 8 join every per-format fit" if args.by else None,
        },
        "data": {
            "path": str(data_path),  # as given: an absolute path names one machine in a shared fit.json
            "sha256": sha256_of(data_path),
            "where": args.where,
            "rows_read": table.n_rows_read,
            "rows_after_where": table.n_rows_where,
            "rows_used": len(table.frame),
            "dropped": table.dropped,
            # report, plot and predict's range check re-apply it (fit.data.table.prepare_table)
            "drop_early": table.drop_early,
            "rows_dropped_early": table.n_dropped_early,
            "bootstrap_unit": bootstrap_units(table.frame)[1],
        },
        "command": shlex.join(["bitlaw", "fit", *sys.argv[2:]])
        if _invoked_as_fit()
        else shlex.join(sys.argv),
        **result,
    }
    print(format_summary(document))  # first: a write that still fails loses no results
    try:
        write_fit(Path(args.output), document)
    except OSError as err:
        raise write_failed(args.output, err) from None
    print(f"wrote {args.output}")
    return 0


def attach_error_models(fits: dict[str, Any], table: Any, opts: Any, skip: bool) -> None:
    """Each fit's forecast error model (fit.answer.forecast): from a point-fit backtest of this table with
    these options when it has >= 4 sizes, else the stated default."""
    from fit.answer.forecast import MIN_INTERNAL_SIZES, default_model
    from fit.study.backtest import BacktestOptions, backtest, error_models, size_index

    n_sizes = len(size_index(table.frame["N"].to_numpy(dtype=float))[1])
    why = ("--no-backtest" if skip else f"{n_sizes} sizes; an internal backtest needs {MIN_INTERNAL_SIZES}"
           if n_sizes < MIN_INTERNAL_SIZES else None)
    models: dict[str, Any] = {}
    if why is None:
        try:
            result = backtest(table, BacktestOptions((opts.law,), opts.by, objective=opts.objective,
                                                     grid=opts.grid, workers=opts.workers, fit_options=opts))
            models = error_models(result, opts.law)
        except InputError as err:  # e.g. a run at two sizes: the fit stands, its error model is the default
            why = f"no internal backtest: {err}"
    for name, entry in fits.items():
        entry["forecast_error"] = models.get(name) or default_model(why or "the backtest predicted no run")


def _has_p_column(path: str, columns: dict[str, str] | None) -> bool:
    """--law coupled fits N_eff when the table has P (then validated as for the precision law), else N."""
    from fit.data.table import read_frame

    return (columns or {}).get("P", "P") in read_frame(path).columns


def _refuse_silent_pooling(args: argparse.Namespace, frame: Any) -> None:
    """A precision-type law without --by on several quantized formats would fit one γ (or one set of effs)
    to all of them: refuse, naming the way out, rather than pool silently."""
    if args.law == "chinchilla" or args.by or args.shared or "format" not in frame:
        return
    formats = sorted({str(f) for f in frame["format"].dropna()} - {"none", "bf16"})
    if len(formats) > 1:
        raise InputError(f"--by: the table holds formats {', '.join(formats)}; --law {args.law} without "
                         "--by format would fit one law to all of them; pass --by format (or --where to "
                         "keep one format)")


_ROUTER_NAMES = ("bitlaw", "cli.py", "__main__.py")  # the console script, and python -m bitlaw[.cli]


def _invoked_as_fit() -> bool:
    return len(sys.argv) > 1 and sys.argv[1] == "fit" and Path(sys.argv[0]).name in _ROUTER_NAMES


def _num(value: float | None) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.6g}"




def format_summary(document: dict[str, Any]) -> str:
    """The compact human summary printed by ``bitlaw fit``: parameters with CIs, objective, flags, MAPE."""
    from fit.answer.caveats import interval_note, unidentified_params
    from fit.fitfile import units_text

    data = document["data"]
    loss = document["loss"] + (f" delta={document['delta']:g}" if document["loss"] == "huber" else "")
    dropped = sum(data["dropped"].values())
    lines = [
        f"{document['law']} law, {loss} on {document['space']} loss, {data['rows_used']} rows"
        f" ({dropped} dropped{', where ' + data['where'] if data['where'] else ''})"
    ]
    if data.get("drop_early"):
        before = data["rows_used"] + data["rows_dropped_early"]
        lines.append(drop_early_line(data["drop_early"], data["rows_dropped_early"], before))
    for name, entry in document["fits"].items():
        state = "converged" if entry["converged"] else "NOT converged"
        lines.append(
            f"fit {name!r}: {entry['n_points']} points, {units_text(entry)}; objective "
            f"{entry['objective']:.10g}, {state} (|grad| {entry['grad_norm']:.1e}, "
            f"{entry['iterations']} iterations{', shared' if entry.get('shared') else ''})"
        )
        ci = entry.get("bootstrap", {})
        unidentified = unidentified_params(entry)
        for key in ("A", "B", "E", "alpha", "beta", "k", "C", "gamma", "delta_D", "delta_N", "offset"):
            if key in unidentified and key in entry:  # a flat objective: no value is measured, nor a CI
                lines.append(f"  {key:<7} {'not identified':>14}  (flat objective; FLAG {key}_unidentified)")
            elif key in entry:
                band = f"  95% CI [{_num(ci[key][0])}, {_num(ci[key][1])}]" if key in ci else ""
                note = interval_note(entry, key)
                lines.append(f"  {key:<7} {_num(entry[key]):>12}{band}{'  (' + note + ')' if note else ''}")
        for p, value in entry.get("eff", {}).items():
            band = entry.get("eff_ci", {}).get(p)
            text = f"  95% CI [{_num(band[0])}, {_num(band[1])}]" if band else ""
            implied = entry["gamma_implied"].get(p)
            if f"eff({float(p):g})" in unidentified:
                text = "  not identified (flat objective)"
            lines.append(f"  eff({p:<4}) {_num(value):>9}{text}  (implied gamma {_num(implied)})")
        extrap = entry.get("extrapolation")
        if extrap and extrap.get("mape") is not None:
            of_runs = extrap.get("n_runs", extrap["n_points"])  # a checkpoint table: more points than runs
            runs = f" of {of_runs} run{'s' * (of_runs != 1)}" if of_runs < extrap["n_points"] else ""
            lines.append(
                f"  extrapolation to N={extrap['N']:.4g} ({extrap['n_points']} points{runs} held out): "
                f"MAPE {100 * extrap['mape']:.2f} %"
            )
        elif extrap:
            lines.append(f"  extrapolation: skipped ({extrap.get('reason')})")
        model = entry.get("forecast_error")
        if model:
            lines.append(f"  forecast error: |log error| <= {model['c0']:.4f} + {model['c1']:.4f} per "
                         f"doubling beyond the data ({model['basis']})")
        spread = entry.get("seed_spread")
        if spread:
            lines.append(f"  seed spread: {spread['nats']:.4f} nats ({spread['basis']}; {spread['points']} "
                         f"points, {spread['rows']} rows)")
        lines += [f"  FLAG {flag}" for flag in entry["flags"]]
    if document["options"]["bootstrap"]:
        strata = next((e.get("bootstrap_strata") for e in document["fits"].values()), None)
        within = f" within each {strata} point" if strata else ""
        lines.append(
            f"bootstrap: {document['options']['bootstrap']} resamples by {data['bootstrap_unit']}{within}, "
            f"seed {document['options']['seed']}; CIs are 2.5-97.5 percentiles"
        )
    pooled = document["extrapolation"]
    if pooled.get("mape") is not None and len(document["fits"]) > 1:
        lines.append(
            f"extrapolation, all fits: MAPE {100 * pooled['mape']:.2f} % on {pooled['n_points']} points"
        )
    return "\n".join(lines)
