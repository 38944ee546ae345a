"""fit/solve/batched.py: the batched Newton bootstrap refit against the L-BFGS-B path it replaces (issue 14
item 7).

No resample may end at a higher objective than fit.solve.staged.refit_any's, the percentile intervals must
agree,
and the draws must not depend on how the resamples are chunked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.solve import batched
from fit.solve.bootstrap import BootJob, draw_counts, run_bootstrap
from fit.solve.objective import FitData, LawSpec, Objective, named_params, objective_and_grad
from fit.solve.optimize import BLAS_LIMIT, GAMMA_BOUNDS
from fit.solve.staged import anchor_data, fit_any, n_base, refit_any

DEMO = Path(__file__).resolve().parents[1] / "tests" / "data" / "demo_runs_2026_12_02.csv"  # the first demo
OBJ = Objective()


def _table(formats=("kmeans",), seed=0, gamma_by_format=None):
    runs = simulate(
        KMEANS_TRUTH,
        np.geomspace(1e6, 1e8, 4),
        np.geomspace(1e8, 1e9, 3),
        bits=(2, 3),
        formats=formats,
        noise=0.01,
        seed=seed,
        gamma_by_format=gamma_by_format,
    )
    group = runs["format"].map({f: i for i, f in enumerate(formats)}).fillna(0).astype(int).to_numpy()
    return runs, group


def _weights(n_rows: int, k: int, seed: int = 1) -> np.ndarray:
    return draw_counts(np.arange(n_rows), k, seed).astype(float)


def _both(theta, data, weight, spec, two_stage=False):
    with threadpool_limits(**BLAS_LIMIT):
        new = batched.refit_batch(theta, data, weight, spec, OBJ, two_stage)
        old = np.array([refit_any(theta, data.with_weight(w), spec, OBJ, two_stage) for w in weight])
    return new, old


def _objectives(thetas, data, weight, spec, two_stage=False):
    out = []
    for theta, w in zip(thetas, weight, strict=True):
        rows = data.with_weight(w)
        if np.isnan(theta).any():
            out.append(np.nan)
        elif two_stage:  # stage 1 decides the prefix; compare what each stage minimised
            out.append(objective_and_grad(theta[: n_base(spec)], anchor_data(rows), LawSpec(), OBJ)[0])
        else:
            out.append(objective_and_grad(theta, rows, spec, OBJ)[0])
    return np.array(out)


def _assert_no_worse(new, old, data, weight, spec, two_stage=False):
    f_new = _objectives(new, data, weight, spec, two_stage)
    f_old = _objectives(old, data, weight, spec, two_stage)
    assert np.array_equal(np.isnan(f_new), np.isnan(f_old))
    ok = np.isnan(f_old) | (f_new <= f_old + 1e-9 * (1 + np.abs(f_old)))
    assert ok.all(), (f_new - f_old)[~ok]


def _ci_close(new, old, spec, tol=0.05, same=None):
    """The 95 % intervals of both sets of draws agree to `tol` of their width; `same` (bool per draw)
    restricts them to the draws where both reached the same objective (elsewhere the batched draw is
    strictly better, and the L-BFGS-B draw is not the resample's optimum)."""
    keep = np.ones(len(new), dtype=bool) if same is None else same
    for name in ("A", "B", "E", "alpha", "beta", "gamma"):
        if name == "gamma" and not spec.precision:
            continue
        a = np.array([named_params(t, spec)[0][name] for t in old[keep] if np.isfinite(t).all()])
        b = np.array([named_params(t, spec)[0][name] for t in new[keep] if np.isfinite(t).all()])
        lo_a, hi_a = np.percentile(a, [2.5, 97.5])
        lo_b, hi_b = np.percentile(b, [2.5, 97.5])
        assert max(abs(lo_a - lo_b), abs(hi_a - hi_b)) < tol * (hi_a - lo_a), name


@pytest.mark.parametrize(
    "spec",
    [
        LawSpec(),
        LawSpec(tie=True),
        LawSpec(precision=True),
        LawSpec(precision=True, n_gamma=2, offset=True),
        LawSpec(precision=True, n_gamma=2, tie=True, offset=True),
    ],
)
@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_gradient_and_hessian_match_the_objective(spec, loss):
    rng = np.random.default_rng(0)
    n = 40
    data = FitData(
        np.exp(rng.uniform(14, 20, n)),
        np.exp(rng.uniform(17, 22, n)),
        2 + rng.uniform(0, 1, n),
        rng.choice([1.0, 2, 3, 4, 16], n),
        rng.integers(0, spec.n_gamma, n),
    )
    obj = Objective(loss=loss)
    theta = np.array(
        [6, 7, 0.5, 0.35] + ([] if spec.tie else [0.3]) + [1.0, 1.3][: spec.n_gamma] * spec.precision
        + ([-0.5] if spec.offset else [])
    )  # fmt: skip
    weight = rng.integers(0, 3, (3, n)).astype(float)
    f, grad, hess = batched.value_grad_hess(np.tile(theta, (3, 1)), weight, data, spec, obj)
    for i, w in enumerate(weight):
        rows = data.with_weight(w)
        f0, g0 = objective_and_grad(theta, rows, spec, obj)
        assert f[i] == pytest.approx(f0, rel=1e-13)
        np.testing.assert_allclose(grad[i], g0, rtol=1e-10, atol=1e-14)
        h = 1e-6

        def g(x, rows=rows):
            return objective_and_grad(x, rows, spec, obj)[1]

        fd = np.column_stack([(g(theta + h * e) - g(theta - h * e)) / (2 * h) for e in np.eye(len(theta))])
        assert np.abs(hess[i] - fd).max() < 1e-7 * np.abs(fd).max()


@pytest.mark.parametrize("precision, n_resamples", [(True, 60), (False, 40)], ids=["precision", "chinchilla"])
def test_no_draw_worse_and_same_intervals(precision: bool, n_resamples: int):
    runs, _ = _table()
    data = FitData(runs["N"], runs["D"], runs["loss"], runs["P"] if precision else None)
    spec = LawSpec(precision=precision)
    theta = fit_any(data, spec, OBJ, grid="coarse").theta
    weight = _weights(len(runs), n_resamples)
    new, old = _both(theta, data, weight, spec)
    _assert_no_worse(new, old, data, weight, spec)
    _ci_close(new, old, spec)


def test_shared_fit_with_two_gammas_no_draw_worse():
    runs, group = _table(("kmeans", "uniform"), gamma_by_format={"uniform": 6.0})
    data = FitData(runs["N"], runs["D"], runs["loss"], runs["P"], group)
    spec = LawSpec(precision=True, n_gamma=2)
    theta = fit_any(data, spec, OBJ, grid="coarse").theta
    weight = _weights(len(runs), 30)
    new, old = _both(theta, data, weight, spec)
    _assert_no_worse(new, old, data, weight, spec)


def test_two_stage_no_draw_worse_and_nan_without_anchors():
    runs, _ = _table()
    data = FitData(runs["N"], runs["D"], runs["loss"], runs["P"])
    spec = LawSpec(precision=True)
    theta = fit_any(data, spec, OBJ, grid="coarse", two_stage=True).theta
    weight = _weights(len(runs), 30)
    weight[0, data.P >= 16] = 0.0  # no anchors at all
    keep = np.flatnonzero(data.P >= 16)[:2]
    weight[1, data.P >= 16] = 0.0
    weight[1, keep] = 1.0  # two anchor rows: fewer than 3 distinct N
    new, old = _both(theta, data, weight, spec, two_stage=True)
    assert np.isnan(new[:2]).all() and np.isnan(old[:2]).all()
    assert np.array_equal(np.isnan(new).any(axis=1), np.isnan(old).any(axis=1))
    assert np.isfinite(new).all(axis=1).sum() > 20
    _assert_no_worse(new, old, data, weight, spec, two_stage=True)


def test_gamma_at_its_bound_stays_there():
    # loss depending on N·P only: γ runs to its upper bound, in L-BFGS-B and here alike
    runs, _ = _table(gamma_by_format={"kmeans": 1e4})
    runs = runs[runs["P"] < 16]
    data = FitData(runs["N"], runs["D"], runs["loss"], runs["P"])
    spec = LawSpec(precision=True)
    theta = fit_any(data, spec, OBJ, grid="coarse").theta
    weight = _weights(len(runs), 10)
    new, old = _both(theta, data, weight, spec)
    at_bound = old[:, 5] == np.log(GAMMA_BOUNDS[1])
    assert at_bound.any()
    assert (new[at_bound, 5] == np.log(GAMMA_BOUNDS[1])).all()
    _assert_no_worse(new, old, data, weight, spec)


def test_draws_do_not_depend_on_chunks_or_workers():
    runs, _ = _table()
    data = FitData(runs["N"], runs["D"], runs["loss"], runs["P"])
    spec = LawSpec(precision=True)
    theta = fit_any(data, spec, OBJ, grid="coarse").theta
    weight = _weights(len(runs), 24)
    with threadpool_limits(**BLAS_LIMIT):
        whole = batched.refit_batch(theta, data, weight, spec, OBJ)
        parts = np.vstack(
            [batched.refit_batch(theta, data, weight[i : i + 5], spec, OBJ) for i in range(0, 24, 5)]
        )
    assert np.array_equal(whole, parts)
    job = BootJob(data, spec, OBJ, theta, np.arange(len(runs)))
    one = run_bootstrap([job], np.arange(len(runs)), 24, seed=3, workers=1, progress=False)
    two = run_bootstrap([job], np.arange(len(runs)), 24, seed=3, workers=2, progress=False)
    assert np.array_equal(one[0], two[0])


@pytest.mark.slow
def test_demo_table_no_draw_worse_and_same_intervals():
    """The first demo's runs.csv (108 runs; each format's fit sees its 48 rows + 12 bf16 anchors), 100
    stratified resamples per format: the acceptance check of issue 14 item 7."""
    from fit.data.table import load_table
    from fit.solve.pipeline import FitOptions, build_jobs
    from fit.solve.resampling import bootstrap_strata, bootstrap_units

    table = load_table(DEMO, require=("N", "D", "loss", "P", "format"))
    opts = FitOptions(law="precision", by="format")
    units, _ = bootstrap_units(table.frame)
    strata, _ = bootstrap_strata(table.frame, units)
    counts = draw_counts(units, 100, 0, strata)
    for job in build_jobs(table, opts):
        theta = fit_any(job.data, job.spec, OBJ).theta
        weight = job.data.weight[None, :] * counts[:, units][:, job.row_ids]
        new, old = _both(theta, job.data, weight, job.spec)
        _assert_no_worse(new, old, job.data, weight, job.spec)
        f_new = _objectives(new, job.data, weight, job.spec)
        f_old = _objectives(old, job.data, weight, job.spec)
        better = f_new < f_old - 1e-9 * (1 + np.abs(f_old))
        # one uniform resample of these 100 (2026-12-02): 0.4 % lower objective, α 0.59 vs 0.71, where the
        # L-BFGS-B refit stopped short; the intervals are compared where both found the same optimum
        assert better.sum() <= 3
        _ci_close(new, old, job.spec, same=~better)
