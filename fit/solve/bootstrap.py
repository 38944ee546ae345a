"""Bootstrap refits: resample by trunk, run or row within each design point
(fit.solve.resampling.bootstrap_units),
warm-start from the full fit, two worker processes.

Every fit of one ``bitlaw fit`` call sees the *same* resample k (the weight vector is drawn once over the
whole table), so draws are aligned across formats: recommend can ask "in how many resamples does 2-bit
beat 4-bit".  Resamples are drawn in the parent from one seeded generator, so the answer does not depend on
the worker count.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from fit.solve import batched
from fit.solve.objective import FitData, Objective
from fit.solve.optimize import BLAS_LIMIT
from fit.solve.staged import Spec, refit_any
from fit.solve.workers import forked_pool


@dataclass
class BootJob:
    """One fit to repeat on every resample: its data, law shape, objective, warm start and table rows."""

    data: FitData
    spec: Spec
    objective: Objective
    theta: np.ndarray  # full-data optimum, the warm start
    row_ids: np.ndarray  # (n,) index into the table of each data row (repeats allowed)
    two_stage: bool = False  # redo both stages on every resample


def draw_counts(
    unit_of_row: np.ndarray, n_resamples: int, seed: int, stratum_of_unit: np.ndarray | None = None
) -> np.ndarray:
    """(K, n_units) multiplicities: each resample draws, in every stratum, as many units as it holds, with
    replacement.  One stratum (``stratum_of_unit`` None or constant) is the plain bootstrap, draw for draw.

    Why strata: the design's points (format, bits) are chosen, not sampled.  Resampling trunks across the
    whole table drops every bf16 anchor from ~1.3 % of resamples and all but one size's anchor from ~12 %;
    γ is then bounded only from below and those resamples run to γ's upper bound (results/demo: 37 of 1000
    k-means draws, all with ≤ 3 of 4 anchor sizes; docs/method.md §6).  Within a stratum, trunks (sizes,
    seeds) are still resampled, so the interval keeps the spread between sizes and seeds."""
    n_units = int(unit_of_row.max()) + 1
    rng = np.random.default_rng(seed)
    if stratum_of_unit is None:
        stratum_of_unit = np.zeros(n_units, dtype=int)
    counts = np.zeros((n_resamples, n_units), dtype=int)
    for stratum in np.unique(stratum_of_unit):
        members = np.flatnonzero(stratum_of_unit == stratum)
        picks = rng.integers(0, len(members), size=(n_resamples, len(members)))
        counts[:, members] = np.stack([np.bincount(row, minlength=len(members)) for row in picks])
    return counts


def _refit_chunk(jobs: list[BootJob], unit_of_row: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Refit every job on each resample of the chunk; returns per job a (k_chunk, n_params) array."""
    out = [np.empty((len(counts), len(job.theta))) for job in jobs]
    with threadpool_limits(**BLAS_LIMIT):  # tiny matrices: BLAS threads only spin (fit/solve/optimize.py)
        _refit_into(out, jobs, unit_of_row, counts)
    return out


def _refit_into(
    out: list[np.ndarray], jobs: list[BootJob], unit_of_row: np.ndarray, counts: np.ndarray
) -> None:
    row_weight = counts[:, unit_of_row].astype(float)  # (k_chunk, n_table_rows)
    for j, job in enumerate(jobs):
        weight = job.data.weight[None, :] * row_weight[:, job.row_ids]
        # all resamples at once (fit/solve/batched.py says why); two-stage keeps L-BFGS-B: its 12-row stage 1
        # stalls on kinks in most resamples, and the fallback then made it slower (benchmarks/fit_speed.py)
        if batched.supports(job.spec, job.objective) and not job.two_stage:
            out[j][:] = batched.refit_batch(job.theta, job.data, weight, job.spec, job.objective)
            continue
        for i, w in enumerate(weight):  # the efficiency and penalty forms: one L-BFGS-B refit each
            out[j][i] = refit_any(job.theta, job.data.with_weight(w), job.spec, job.objective, job.two_stage)


class _Progress:
    """A dependency-free one-line progress bar on stderr."""

    def __init__(self, total: int, enabled: bool, label: str = "bootstrap") -> None:
        self.total, self.enabled, self.label, self.start = total, enabled, label, time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{self.total}  {elapsed:5.1f} s  eta {eta:5.1f} s")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_bootstrap(
    jobs: list[BootJob],
    unit_of_row: np.ndarray,
    n_resamples: int,
    seed: int = 0,
    workers: int = 2,
    progress: bool | None = None,
    stratum_of_unit: np.ndarray | None = None,
) -> list[np.ndarray]:
    """K warm-started refits of every job; returns per job a (K, n_params) array of θ draws."""
    counts = draw_counts(unit_of_row, n_resamples, seed, stratum_of_unit)
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(n_resamples, show)
    bar.update(0)
    # two chunks per worker: fit/solve/batched.py refits a chunk's resamples together, and its slowest
    # resamples
    # set the chunk's step count, so fewer, larger chunks pay that tail less often (250 resamples in chunks of
    # 50: 17.3 s, in one chunk: 13.7 s, measured on the demo table); still enough chunks to balance workers
    chunk = max(1, min(250, -(-n_resamples // (2 * max(workers, 1)))))
    pieces = [(i, counts[i : i + chunk]) for i in range(0, n_resamples, chunk)]
    results: dict[int, list[np.ndarray]] = {}
    if workers <= 1 or len(pieces) == 1:
        for start, block in pieces:
            results[start] = _refit_chunk(jobs, unit_of_row, block)
            bar.update(sum(len(r[0]) for r in results.values()))
    else:
        # fork: workers inherit the imported modules (no re-import cost); the jobs are small to pickle.
        # forked_pool terminates the workers on Ctrl-C instead of waiting for their chunks (solve/workers.py)
        with forked_pool(workers) as pool:
            futures = {start: pool.apply_async(_refit_chunk, (jobs, unit_of_row, b)) for start, b in pieces}
            done = 0
            for start, future in futures.items():
                results[start] = future.get()
                done += len(results[start][0])
                bar.update(done)
    order = sorted(results)
    return [np.vstack([results[start][j] for start in order]) for j in range(len(jobs))]


def finite_percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite draws, the others dropped (NaN, NaN when none are finite): a refit
    that failed says nothing about the parameter.  Compare fit.answer.recommend.bounded_loss_ci."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)
