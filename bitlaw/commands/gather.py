"""``bitlaw gather SWEEP_DIR… -o runs.csv``: run dirs -> one runs table (CSV or Parquet)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bitlaw.commands._options import N_CONVENTIONS, check_output, write_failed
from fit.errors import InputError
from sweep.contract import SummaryStatus, atomic_path

SUFFIXES = (".csv", ".parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR", help="directories holding run dirs")
    parser.add_argument(
        "-o", "--output", default="runs.csv", help="runs.csv or runs.parquet (default: runs.csv)"
    )
    parser.add_argument(
        "--n-convention",
        default="quant",
        choices=N_CONVENTIONS,
        help="which count becomes column N: N_quant (default), N_nonembed or N_total",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="also write runs that did not complete (status and reason columns filled)",
    )


def _parquet_safe(frame):
    """Config columns can mix types across runs (qat_start: 0.1 vs 1000 vs 'auto'); Parquet needs one type."""
    for column in frame.columns:
        if frame[column].dtype == object:
            kinds = {type(v) for v in frame[column] if v is not None}
            if len(kinds) > 1 and not kinds <= {int, float}:
                frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    return frame


def run(args: argparse.Namespace) -> int:
    from fit.data.gather import MISMATCHED, gather, to_frame

    output = Path(args.output)
    if output.suffix.lower() not in SUFFIXES:
        raise InputError(f"-o/--output: {output} must end in {' or '.join(SUFFIXES)}")
    check_output(output)  # before walking the run dirs
    result = gather(args.sweep_dirs, args.n_convention, args.all)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for skipped in result.skipped:
        if skipped.status == MISMATCHED:
            print(f"refused: {skipped.run_dir}: {skipped.reason}", file=sys.stderr)
        else:
            print(f"not completed: {skipped.run_dir}: {skipped.status} ({skipped.reason})", file=sys.stderr)
    if not result.rows:
        raise InputError(
            f"no completed runs under {', '.join(args.sweep_dirs)} "
            f"({len(result.skipped)} not completed; --all writes them anyway)"
        )
    frame = to_frame(result.rows)
    try:
        with atomic_path(output) as tmp:
            if output.suffix.lower() == ".csv":
                frame.to_csv(tmp, index=False)
            else:
                _parquet_safe(frame).to_parquet(tmp, index=False)
    except OSError as err:  # the warnings above were printed; the table is not
        raise write_failed(output, err) from None
    completed = int((frame["status"] == SummaryStatus.COMPLETED).sum())
    print(f"wrote {output}: {len(frame)} rows ({completed} completed, {len(result.skipped)} not completed)")
    return 0
