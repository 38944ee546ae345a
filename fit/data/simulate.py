"""Synthetic runs tables drawn from known law parameters, for tests, docs and benchmarks.

A grid of (format, bits, N, D) runs; P = bits + scale_bits (1BW's block-64 bf16 scales add 16/64 = 0.25 bit).
With ``anchor=True`` a 16-bit run (format ``none``, P = 16) is added at every (N, D): the high-precision
anchor that makes γ identifiable.  Noise is multiplicative, ``loss·exp(σ·ε)``, i.e. σ is the relative noise.
Any fit.law mapping draws its own law: one with ``k`` draws the coupled form (COUPLED_TRUTH), without
``gamma`` a table whose P the law ignores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fit.law import predict_loss

# 1BW-like truths used by tests and the benchmark: loss in nats/byte territory, γ ≈ 3.3 (k-means)
KMEANS_TRUTH = {"A": 350.0, "B": 1800.0, "E": 1.6, "alpha": 0.34, "beta": 0.36, "gamma": 3.3}
# The coupled form, (A·N_eff^(−α) + B·D^(−β))^k + E, with k = 0.5 (Skaling fits 0.31-0.90): A, B squared and
# α, β doubled from KMEANS_TRUTH, so that each term alone, (A·N^(−α))^k, is KMEANS_TRUTH's; losses 2.1-5.6
# on default_grid
COUPLED_TRUTH = {"A": 350.0**2, "B": 1800.0**2, "E": 1.6, "alpha": 0.68, "beta": 0.72, "gamma": 3.3, "k": 0.5}


def simulate(
    params: Mapping[str, float],
    N: Sequence[float],
    D: Sequence[float],
    bits: Sequence[int] = (1, 2, 3, 4),
    formats: Sequence[str] = ("kmeans",),
    anchor: bool = True,
    noise: float = 0.0,
    seed: int = 0,
    scale_bits: float = 0.25,
    gamma_by_format: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per simulated run: ``run, format, bits, P, N, D, loss`` (the `bitlaw gather` column names).

    ``gamma_by_format`` overrides γ per format; anchor rows use ``params`` as given.
    """
    rng = np.random.default_rng(seed)
    rows = []
    cells = [(fmt, b, b + scale_bits) for fmt in formats for b in bits]
    if anchor:
        cells.append(("none", 16, 16.0))
    for fmt, b, p in cells:
        law = dict(params)
        if gamma_by_format and fmt in gamma_by_format:
            law["gamma"] = gamma_by_format[fmt]
        for n in N:
            for d in D:
                rows.append(
                    {
                        "run": f"{fmt}-{b}b-N{n:.3g}-D{d:.3g}",
                        "format": fmt,
                        "bits": b,
                        "P": p,
                        "N": float(n),
                        "D": float(d),
                        "loss": float(predict_loss(law, n, d, p)),
                    }
                )
    frame = pd.DataFrame(rows)
    if noise > 0:
        frame["loss"] = frame["loss"] * np.exp(noise * rng.standard_normal(len(frame)))
    return frame


def default_grid(n_sizes: int = 8, n_tokens: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Log-spaced N over 1000× and D over 100×, so E, α and β are all identifiable (reference §4.3)."""
    return np.geomspace(1e6, 1e9, n_sizes), np.geomspace(1e8, 1e10, n_tokens)
