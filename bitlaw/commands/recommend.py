"""``bitlaw recommend``: the best bit width and model for a weight-memory budget (docs/method.md §7)."""

from __future__ import annotations

import argparse
import json
import sys

from bitlaw.commands._options import accounting, add_bits, add_scale_accounting, chosen_bits, load_source
from fit.answer.fit_source import FitSource, warnings_for
from fit.answer.presets import PRESETS, LawSource
from fit.answer.query import query_warnings
from fit.answer.recommend import Recommendation, recommend
from fit.answer.shapes import resolve_arch
from fit.errors import InputError
from fit.render.recommend_text import render_text, to_json
from fit.units import format_name, parse_memory, parse_tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fit", nargs="?", metavar="FIT.json", help="a fit with a P term (or --preset)")
    parser.add_argument("--preset", help=f"published constants instead of a fit: {', '.join(PRESETS)}")
    parser.add_argument(
        "--memory",
        required=True,
        help="weight memory: 8GB (1e9), 8GiB (2^30), 7.5e9 bytes, or a list 1GB,4GB,16GB",
    )
    parser.add_argument("--tokens", help="training tokens D, e.g. 1.5e11 or 150B (needed to predict a loss)")
    parser.add_argument(
        "--arch",
        default="llama3",
        help="llama3 | bitlaw (conf/model) | shapes.yaml/.json; each may end in :continuous (default llama3)",
    )
    add_bits(parser)
    parser.add_argument(
        "--format",
        type=format_name,
        help="quantization format (default: kmeans if fitted, else the fit's first)",
    )
    add_scale_accounting(parser)
    parser.add_argument(
        "--json", action="store_true", help="print JSON (top-level 'best': bits, format, ...)"
    )


def run_recommendations(args: argparse.Namespace) -> tuple[LawSource, list[Recommendation]]:
    """Parse, validate, rank every budget."""
    source = load_source(args.fit, args.preset)
    budgets = parse_memory(args.memory)
    acct = accounting(args.block_size, args.scale_bits)
    bits = chosen_bits(args.bits, source, acct)
    shapes = resolve_arch(args.arch)
    law = source.law(args.format or source.default_format)
    if args.tokens is None and law.has_loss:
        raise InputError("--tokens: required to predict a loss (training tokens D, e.g. --tokens 1.5e11)")
    tokens = parse_tokens(args.tokens) if args.tokens is not None else float("nan")
    entry = serving_entry(args.fit, args.format or source.default_format) if args.fit else None
    return source, [recommend(source, m, tokens, shapes, bits, args.format, acct, entry) for m in budgets]


def serving_entry(path: str, fmt: str) -> dict:
    """The fit.json entry that answers for ``fmt``: its data range and forecast error model."""
    from fit.fitfile import load_fit

    return load_fit(path).entry(fmt)


def run(args: argparse.Namespace) -> int:
    source, recs = run_recommendations(args)
    warnings = warnings_for(source, recs[0].format)  # the fit's flags: an answer must not hide them
    if isinstance(source, FitSource):  # and a question far outside the fitted N, D (fit.json data_range)
        n_values = [r.n_law for rec in recs for r in rec.rows if r.shape is not None]
        warnings += query_warnings(source.data_ranges, recs[0].format, recs[0].tokens, n_values)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(recs, source, args.arch, warnings), indent=2))
    else:
        print(render_text(recs, source, args.arch))
    return 0
