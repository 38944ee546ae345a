"""``bitlaw report``: a Markdown report with embedded figures into a results directory."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bitlaw.commands._options import DEFAULT_BUDGETS, STUDY_ARCH, add_allow_other_data, add_study_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--preceded-by", metavar="CMD", action="append", default=[],
                        help="a command that produced the data (e.g. the sweep, gather), listed before the "
                        "fit's own in the report's Commands block; repeat in order")
    parser.add_argument("--forms", metavar="FIT.json", action="append", default=[],
                        help="a fit of another law form (efficiency, penalty) of the same rows, compared "
                        "as it is instead of refitted with coarse starts; repeat for each form")
    add_allow_other_data(parser)


def command_line(args: argparse.Namespace) -> str:
    """This report's own command, rebuilt from the parsed options (defaults left out)."""
    argv = ["bitlaw", "report", args.fit]
    if args.data:
        argv += ["--data", args.data] + (["--allow-other-data"] if args.allow_other_data else [])
    argv += ["-o", args.output]
    for flag, value, default in (
        ("--memory", args.memory, DEFAULT_BUDGETS),
        ("--tokens", args.tokens, None),
        ("--arch", args.arch, STUDY_ARCH),
        ("--bits", args.bits, None),
        ("--block-size", args.block_size, 64),
        ("--scale-bits", args.scale_bits, 16),
    ):
        if value != default:
            argv += [flag, str(value)]
    for form in args.forms:
        argv += ["--forms", form]
    return shlex.join(argv)


def run(args: argparse.Namespace) -> int:
    from bitlaw.commands._options import accounting, chosen_bits, output_dir
    from fit.answer.caveats import study_warnings
    from fit.answer.fit_source import source_from_fit
    from fit.answer.shapes import resolve_arch
    from fit.errors import InputError
    from fit.fitfile import check_data_is_fitted, load_fit
    from fit.render.report import ReportInputs, build_report, load_runs
    from fit.render.report_forms import check_given_forms
    from fit.units import parse_memory, parse_tokens

    if not args.fit:
        raise InputError("FIT.json: required (the report describes a fit; make one with `bitlaw fit`)")
    fitfile = load_fit(args.fit)
    source = source_from_fit(fitfile)  # a chinchilla fit is rejected here, before anything is written
    acct = accounting(args.block_size, args.scale_bits)
    resolve_arch(args.arch)
    budgets, tokens = parse_memory(args.memory), parse_tokens(args.tokens) if args.tokens else None
    bits = tuple(chosen_bits(args.bits, source, acct))
    form_fits = tuple(load_fit(path) for path in args.forms)
    if form_fits and not args.data:
        raise InputError("--forms: needs --data (the forms are compared on the runs table's rows)")
    check_given_forms(fitfile, form_fits)  # before -o is made: a refused option leaves nothing behind
    tables = load_runs(fitfile, Path(args.data)) if args.data else None  # a bad table: refused before -o
    other = check_data_is_fitted(fitfile, args.data, args.allow_other_data) if args.data else None
    out = output_dir(args.output)  # last: a bad option above leaves no empty directory behind
    formats = list(tables[1]["format"].unique()) if tables is not None and "format" in tables[1] else None
    for warning in ([other] if other else []) + study_warnings(fitfile, formats):  # after every check
        print(f"warning: {warning}", file=sys.stderr)
    inputs = ReportInputs(
        fitfile=fitfile,
        data_path=Path(args.data) if args.data else None,
        out_dir=out,
        budgets=budgets,
        tokens=tokens,
        arch=args.arch,
        bits=bits,
        command=command_line(args),
        earlier_commands=tuple(args.preceded_by),
        tables=tables,
        form_fits=form_fits,
    )
    report = build_report(inputs)
    print(f"wrote {report}")
    return 0
