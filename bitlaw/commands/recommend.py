"""``bitlaw recommend``: the best bit width and model for a weight-memory budget (docs/method.md §7)."""

from __future__ import annotations

import argparse
import json
import sys

from fit.answer.fit_source import FitSource, source_from_fit, warnings_for
from fit.answer.memory import BitAccounting
from fit.answer.presets import PRESETS, LawSource, get_preset
from fit.answer.query import can_answer, query_warnings
from fit.answer.recommend import Recommendation, recommend
from fit.answer.shapes import resolve_arch
from fit.errors import InputError
from fit.fitfile import load_fit
from fit.render.recommend_text import render_text, to_json
from fit.units import DEFAULT_BITS, parse_bits, parse_memory, parse_tokens


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
    parser.add_argument("--bits", help=BITS_HELP)
    parser.add_argument(
        "--format", help="quantization format (default: kmeans if fitted, else the fit's first)"
    )
    parser.add_argument(
        "--block-size", type=int, default=64, help="weights per quantization scale (default 64)"
    )
    parser.add_argument("--scale-bits", type=int, default=16, help="bits per stored scale (default 16, bf16)")
    parser.add_argument(
        "--json", action="store_true", help="print JSON (top-level 'best': bits, format, ...)"
    )


BITS_HELP = (f"bit widths to compare, 16 = bf16 (default: those of {','.join(map(str, DEFAULT_BITS))} "
             "inside the fit's data; all of them for a preset)")


def load_source(fit: str | None, preset: str | None) -> LawSource:
    presets = ", ".join(PRESETS)
    if fit and preset:
        raise InputError(f"give FIT.json or --preset, not both (FIT.json {fit}, --preset {preset})")
    if not fit and not preset:
        raise InputError(f"FIT.json: required, or --preset NAME (one of: {presets})")
    return get_preset(preset) if preset else source_from_fit(load_fit(fit))


def chosen_bits(given: str | None, source: LawSource, acct: BitAccounting) -> list[int]:
    """--bits as given, else the default widths every fitted format's data span. (A fixed default failed
    late, on the first figure or budget, for a fit without 1-bit runs.) Presets have no span: all of them."""
    if given is not None:
        return parse_bits(given)
    keep = list(DEFAULT_BITS)
    for fmt, p_range in source.p_range.items():
        if fmt == "none":
            continue
        fmt = source.default_format if fmt == "all" else fmt  # a fit without --by serves any format
        law = source.law(fmt)
        # the rule of fit.answer.recommend.check_bits_in_range, which refuses a width outside the span
        keep = [b for b in keep if p_range[0] - 1e-9 <= law.law_p(b, acct.p_w(b, fmt)) <= p_range[1] + 1e-9]
        # an efficiency fit has an eff only at the P it fitted: leave out widths it cannot answer
        keep = [b for b in keep if can_answer(law.params, law.law_p(b, acct.p_w(b, fmt)))]
    return keep or list(DEFAULT_BITS)


def accounting(block_size: int, scale_bits: int) -> BitAccounting:
    if block_size < 1:
        raise InputError(f"--block-size: must be a positive integer, got {block_size}")
    if scale_bits < 0:
        raise InputError(f"--scale-bits: must be 0 or more, got {scale_bits}")
    return BitAccounting(block_size, scale_bits)


def run_recommendations(args: argparse.Namespace) -> tuple[LawSource, list[Recommendation]]:
    """Shared by ``recommend`` and ``report``: parse, validate, rank every budget."""
    source = load_source(args.fit, args.preset)
    budgets = parse_memory(args.memory)
    acct = accounting(args.block_size, args.scale_bits)
    bits = chosen_bits(args.bits, source, acct)
    shapes = resolve_arch(args.arch)
    law = source.law(args.format or source.default_format)
    if args.tokens is None and law.has_loss:
        raise InputError("--tokens: required to predict a loss (training tokens D, e.g. --tokens 1.5e11)")
    tokens = parse_tokens(args.tokens) if args.tokens is not None else float("nan")
    return source, [recommend(source, m, tokens, shapes, bits, args.format, acct) for m in budgets]


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
