"""``bitlaw predict fit.json --N … --D … [--P …] [--format …]``: the fitted loss, with a bootstrap CI."""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--json", action="store_true",
                        help='print {"loss", "ci", "forecast": {"interval", "relative_error", ...}}')


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
    from fit.answer.forecast import forecast
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
    interval = prediction_interval(fit, N, D, P, args.format)
    ci = None if interval is None else (float(interval[0]), float(interval[1]))
    # the bootstrap interval widened by the error the fit's backtest measured at this distance
    block = forecast(fit.entry(args.format), loss, ci, N, D)
    if args.json:
        document = {"loss": loss, "ci": list(ci) if ci else None, "n_resamples": interval and interval[2],
                    "N": N, "D": D, "P": P, "format": args.format, "forecast": block}
        print(json.dumps(document, indent=2))
        return 0
    line = f"{loss:.6f}"
    if interval is not None:
        line += f"  (95% CI {ci[0]:.6f} to {ci[1]:.6f}, {interval[2]} bootstrap resamples)"
    print(f"{line}  {forecast_line(block)}")  # one line: scripts read the loss as its first field
    return 0


def forecast_line(block: dict) -> str:
    """``forecast interval lo to hi (±r %; N factor f, D/N d against the data's a-b; basis)``."""
    lo, hi = block["interval"]
    dn = block["D_over_N_range"]
    against = f" against the data's {dn[0]:.3g}-{dn[1]:.3g}" if dn else ""
    error = 100 * math.expm1(block["relative_error"])
    return (f"forecast interval {lo:.6f} to {hi:.6f} (error +-{error:.2f} % "
            f"at N factor {block['N_factor']:.3g}, D/N {block['D_over_N']:.3g}{against}; {block['basis']})")
