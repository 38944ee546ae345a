"""``bitlaw backtest TABLE [--law L1,L2,…] [--by format] [-o DIR] [--json]``: a rolling-origin backtest in N
(fit/study/backtest.py): fit each law on the smallest k sizes, predict every larger run, for every k; which
law forecasts best, and how the error grows with the N factor and at the large-N, small-D/N corner.

The heavy imports happen inside :func:`run`, so ``bitlaw backtest --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys

from bitlaw.commands._options import N_CONVENTIONS, add_drop_early, drop_early_line, output_dir
from fit.errors import InputError

GRIDS = ("coarse", "default", "fine")  # mirrors fit.solve.optimize's start grids without importing scipy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="TABLE", help="runs table: .csv, .tsv, .jsonl or .parquet")
    parser.add_argument(
        "--law", metavar="L1,L2,...",
        help="laws to compare, comma-separated, as `bitlaw fit --law` names them (default: every law the "
        "table supports: chinchilla, and the laws that read P when it has a P column)",
    )
    parser.add_argument("--by", choices=("format",), help="one fit per format, as `bitlaw fit --by format`")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="write backtest.json, backtest.csv (every prediction) and error_vs_factor.png")
    parser.add_argument("--json", action="store_true", help="print the backtest as JSON instead of a table")
    parser.add_argument(
        "--min-sizes", type=int, default=3, metavar="K",
        help="the fewest sizes a fit sees (default 3: A, alpha and E along N need a size to spare)",
    )
    parser.add_argument("--grid", default="default", choices=GRIDS, help="start grid of each fit (default)")
    parser.add_argument("--workers", type=int, default=2, help="fit processes (default 2)")
    parser.add_argument(
        "--columns", metavar="MAP",
        help="map names to your columns: N=col,D=col,loss=col[,P=col,format=col,run=col]",
    )
    parser.add_argument(
        "--n-convention", choices=N_CONVENTIONS,
        help="take N from N_quant / N_nonembed / N_total (a `bitlaw gather` table); default: N",
    )
    parser.add_argument("--where", metavar="EXPR", help="pandas query on the input's column names")
    parser.add_argument(
        "--drop-invalid", action="store_true",
        help="drop rows with missing, non-numeric or non-positive N, D, loss, P (counted)",
    )
    add_drop_early(parser)


def _laws(given: str | None) -> list[str] | None:
    if given is None:
        return None
    laws = [law.strip() for law in given.split(",") if law.strip()]
    if not laws:
        raise InputError(f"--law: {given!r} names no law; give a comma list, e.g. chinchilla,precision")
    return list(dict.fromkeys(laws))


def run(args: argparse.Namespace) -> int:
    from fit.data.table import check_drop_early, column_mapping, parse_columns, prepare_table, read_frame
    from fit.render.backtest_plot import plot_error_vs_factor
    from fit.render.backtest_text import format_backtest
    from fit.study.backtest import P_FREE_LAWS, BacktestOptions, backtest, default_laws

    laws = _laws(args.law)
    if args.workers < 1:
        raise InputError(f"--workers: {args.workers} is not allowed; use 1 or more")
    check_drop_early(args.drop_early)
    out = output_dir(args.output) if args.output else None  # before any work: a bad -o loses nothing
    columns = parse_columns(args.columns)
    frame = read_frame(args.data)
    has_p = column_mapping(columns, args.n_convention)["P"] in frame.columns
    needs_p = has_p and (laws is None or any(law not in P_FREE_LAWS for law in laws))
    require = ("N", "D", "loss") + (("P",) if needs_p else ()) + (("format",) if args.by else ())
    table = prepare_table(frame, columns, args.where, require, args.drop_invalid, args.n_convention,
                          args.drop_early)
    note = None
    if laws is None:
        laws, note = default_laws(table.frame, args.by)
    result = backtest(table, BacktestOptions(
        tuple(laws), args.by, args.min_sizes, grid=args.grid, workers=args.workers
    ))
    document = result.to_dict()
    document["data"] = {"path": args.data, "where": args.where, "rows_used": len(table.frame),
                        "dropped": table.dropped, "columns": table.columns,
                        "drop_early": table.drop_early, "rows_dropped_early": table.n_dropped_early}
    if out is not None:
        (out / "backtest.json").write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        result.predictions.to_csv(out / "backtest.csv", index=False)
        if len(result.predictions):
            plot_error_vs_factor(result.predictions, out / "error_vs_factor.png")
    if args.json:
        json.dump(document, sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    if note:
        print(f"note: {note}")
    if table.drop_early:
        before = len(table.frame) + table.n_dropped_early
        print(drop_early_line(table.drop_early, table.n_dropped_early, before))
    print(format_backtest(document))
    if out is not None:
        print(f"wrote {out}/backtest.json, backtest.csv, error_vs_factor.png")
    return 0
