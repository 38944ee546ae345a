"""``bitlaw predict fit.json --N … --D … [--P …] [--format …]``: the fitted loss, with a bootstrap CI."""

from __future__ import annotations

import argparse
import math
import sys

from fit.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fit", metavar="FIT_JSON", help="a fit.json written by `bitlaw fit`")
    parser.add_argument("--N", required=True, help="parameters (same convention as the fit), e.g. 1e9")
    parser.add_argument("--D", required=True, help="training tokens, e.g. 2e10")
    parser.add_argument(
        "--P", help="bits per weight (precision, efficiency, penalty laws), e.g. 2.25; 16 for bf16"
    )
    parser.add_argument("--format", help="which per-format fit to use (with a --by format fit)")


def _positive(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{flag}: {text!r} is not a number (e.g. {flag} 1e9)") from None
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{flag}: {text!r} is not allowed; it must be a positive finite number")
    return value


def run(args: argparse.Namespace) -> int:
    from fit.answer.caveats import predict_warnings
    from fit.fitfile import load_fit, prediction_interval

    N, D, P = _positive("--N", args.N), _positive("--D", args.D), _positive("--P", args.P)
    fit = load_fit(args.fit)
    if P is not None and fit.law == "chinchilla":
        # silently dropping --P would print a bf16-agnostic loss as if it answered the question
        raise InputError(
            f"--P: {args.fit} is a chinchilla-law fit, which has no bits-per-weight term; drop --P or refit "
            "with --law precision, efficiency or penalty"
        )
    loss = float(fit.predict(N, D, P, args.format))
    # a loss without its fit's flags, or far beyond the fitted N and D, reads as more certain than it is
    for warning in predict_warnings(fit, args.format, {"N": N, "D": D, "P": P}):
        print(f"warning: {warning}", file=sys.stderr)
    line = f"{loss:.6f}"
    interval = prediction_interval(fit, N, D, P, args.format)
    if interval is not None:
        lo, hi, n_draws = interval
        line += f"  (95% CI {float(lo):.6f} to {float(hi):.6f}, {n_draws} bootstrap resamples)"
    print(line)
    return 0
