"""``bitlaw predict fit.json --N … --D … [--P …] [--format …]``: the fitted loss, with a bootstrap CI."""

from __future__ import annotations

import argparse
import math

from fit.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fit", metavar="FIT_JSON", help="a fit.json written by `bitlaw fit`")
    parser.add_argument("--N", required=True, help="parameters (same convention as the fit), e.g. 1e9")
    parser.add_argument("--D", required=True, help="training tokens, e.g. 2e10")
    parser.add_argument("--P", help="bits per weight (precision law), e.g. 2.25; 16 for bf16")
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
    import numpy as np

    from fit.fitfile import load_fit
    from fit.law import predict_loss

    N, D, P = _positive("--N", args.N), _positive("--D", args.D), _positive("--P", args.P)
    fit = load_fit(args.fit)
    loss = float(fit.predict(N, D, P, args.format))
    line = f"{loss:.6f}"
    samples = fit.bootstrap_samples(args.format)
    if samples:
        keys = list(samples)
        draws = np.array(
            [
                float(predict_loss({k: samples[k][i] for k in keys}, N, D, P))
                for i in range(len(samples[keys[0]]))
            ]
        )
        draws = draws[np.isfinite(draws)]
        lo, hi = np.percentile(draws, [2.5, 97.5])
        line += f"  (95% CI {lo:.6f} to {hi:.6f}, {len(draws)} bootstrap resamples)"
    print(line)
    return 0
