"""``bitlaw plot``: the study's figures as PNGs into a directory (see fit/render/plot.py for the list)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bitlaw.commands._options import (
    accounting,
    add_allow_other_data,
    add_study_arguments,
    chosen_bits,
    load_source,
    output_dir,
)
from fit.errors import InputError
from fit.fitfile import check_data_is_fitted, load_fit
from fit.units import parse_memory, parse_tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--preset", help="published constants instead of a fit (memory figures only)")
    parser.add_argument(
        "--params", help="fixed N for the (D, P_w) isoloss panel (default: the data's largest N)"
    )
    add_allow_other_data(parser)


def run(args: argparse.Namespace) -> int:
    from fit.answer.caveats import study_warnings
    from fit.answer.shapes import resolve_arch
    from fit.render.figure import PlotInputs
    from fit.render.plot import make_plots
    from fit.render.report import load_runs

    source = load_source(args.fit, args.preset)
    fitfile = load_fit(args.fit) if args.fit else None
    if args.data and fitfile is None:
        raise InputError("--data: needs FIT.json (a preset has no runs to compare with)")
    runs = load_runs(fitfile, Path(args.data))[1] if args.data else None
    other = check_data_is_fitted(fitfile, args.data, args.allow_other_data) if args.data else None
    resolve_arch(args.arch)  # fail on a bad --arch before any drawing
    acct = accounting(args.block_size, args.scale_bits)
    budgets, bits = parse_memory(args.memory), tuple(chosen_bits(args.bits, source, acct))
    tokens = parse_tokens(args.tokens) if args.tokens else None
    params_n = None
    if args.params:
        try:
            params_n = float(args.params)
        except ValueError:
            raise InputError(f"--params: {args.params!r} is not a number of parameters, e.g. 3.9e9") from None
    out = output_dir(args.output)  # last: a bad option above leaves no empty directory behind
    formats = list(runs["format"].unique()) if runs is not None and "format" in runs else None
    for warning in ([other] if other else []) + study_warnings(fitfile, formats):  # flagged: not clean
        print(f"warning: {warning}", file=sys.stderr)
    inputs = PlotInputs(
        source,
        fitfile,
        runs,
        tokens,
        params_n,
        budgets,
        args.arch,
        bits,
        acct,
    )
    for name, path in make_plots(inputs, out).items():
        print(f"{name}: {path}")
    return 0
