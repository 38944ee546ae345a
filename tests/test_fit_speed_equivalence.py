"""The faster paths give the answers of the slower ones they replaced (issue 14 item 7).

* ``objective_and_grad`` is written on 1-D arrays; the reference here is the (S, n) batch formulation it
  replaced (``log_terms`` + ``_lse``).  Same operations in the same order, so bootstrap draws for a fixed seed
  must be *identical*, not merely close.
* gather parses config.yaml with libyaml's safe loader when present; rows must equal the pure-Python loader's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import fit.data.gather
import fit.solve.optimize
from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.solve.bootstrap import BootJob, run_bootstrap
from fit.solve.objective import (
    FitData,
    LawSpec,
    Objective,
    _lse,
    _rho,
    _unpack,
    log_terms,
    objective_and_grad,
)
from fit.solve.optimize import fit_law
from sweep.contract import atomic_write_json, atomic_write_text, compute_run_id


def batch_objective_and_grad(theta, data, spec, obj):
    """The pre-speed-up objective: one θ pushed through the (S, n) batch layout."""
    t1, t2, t3, log_n, u = log_terms(theta[None, :], data, spec)
    lse, (w1, w2, w3) = _lse(t1, t2, t3)
    lse, w1, w2, w3, log_n = lse[0], w1[0], w2[0], w3[0], log_n[0]
    if obj.space == "log":
        resid, dresid_dlse = data.logL - lse, -1.0
    else:
        pred = np.exp(lse)
        resid, dresid_dlse = data.L - pred, -pred
    value, slope = _rho(resid, obj)
    f = float((value * data.weight).sum())
    coef = data.weight * slope * dresid_dlse
    c1, c2 = coef * w1, coef * w2
    c = _unpack(theta[None, :], spec)
    grad = [c1.sum(), c2.sum(), (coef * w3).sum()]
    d_alpha, d_beta = -(c1 * log_n).sum(), -(c2 * data.logD).sum()
    grad += [d_alpha + d_beta] if spec.tie else [d_alpha, d_beta]
    if spec.precision:
        u = u[0]
        dt1_du = -c["alpha"][0] / np.expm1(u)
        grad += list(np.bincount(data.group, weights=c1 * dt1_du * -u, minlength=spec.n_gamma))
        if spec.offset:
            gamma_row = np.exp(c["g"][0][data.group])
            grad.append(float((c1 * dt1_du * (-1.0 / gamma_row)).sum()))
    return f, np.asarray(grad, dtype=float)


def _runs():
    N, D = np.geomspace(1e6, 1e9, 5), np.geomspace(1e8, 1e10, 4)
    return simulate(KMEANS_TRUTH, N, D, (1, 2, 4), noise=0.005, seed=0)


SPECS = [LawSpec(), LawSpec(True), LawSpec(True, 2), LawSpec(True, 1, True), LawSpec(True, 2, False, True)]
OBJECTIVES = [Objective(), Objective("mse"), Objective("mae", space="raw"), Objective("asymmetric")]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("obj", OBJECTIVES, ids=lambda o: f"{o.loss}-{o.space}")
def test_objective_matches_batch_formulation_bit_for_bit(spec, obj):
    runs, rng = _runs(), np.random.default_rng(3)
    group = np.arange(len(runs)) % 2 if spec.n_gamma == 2 else None
    weight = rng.integers(0, 3, len(runs)).astype(float)  # a bootstrap-like weight vector
    data = FitData(runs["N"], runs["D"], runs["loss"], runs["P"] if spec.precision else None, group, weight)
    for _ in range(20):
        theta = np.r_[rng.uniform(0, 10, 3), rng.uniform(0, 1, spec.n_params - 3)]
        if spec.offset:
            theta[-1] = -0.5  # p0 below min P
        f_new, g_new = objective_and_grad(theta, data, spec, obj)
        f_ref, g_ref = batch_objective_and_grad(theta, data, spec, obj)
        assert f_new == f_ref
        np.testing.assert_array_equal(g_new, g_ref)


def test_bootstrap_draws_identical_to_batch_objective(monkeypatch):
    """Same seed, same refits: the draws (hence every CI) equal those of the old objective exactly."""
    runs = _runs()
    data, spec, obj = FitData(runs["N"], runs["D"], runs["loss"], runs["P"]), LawSpec(True), Objective()
    rows = np.arange(len(runs))
    theta = fit_law(data, spec, obj).theta
    job = BootJob(data, spec, obj, theta, rows)
    fast = run_bootstrap([job], rows, 40, seed=7, workers=1, progress=False)[0]
    monkeypatch.setattr(fit.solve.optimize, "objective_and_grad", batch_objective_and_grad)
    slow = run_bootstrap([job], rows, 40, seed=7, workers=1, progress=False)[0]
    assert np.isfinite(fast).all()
    np.testing.assert_array_equal(fast, slow)


CONFIG_TEXT = """\
model: {d_model: 64, n_layers: 2, vocab_size: 256}
quant: {format: kmeans, bits: 2, qat_start: auto, kmeans_tol: 1.0e-4, binary_mean: false, scale: null}
train: {lr: 0.003, tokens: 100000, decay_fraction: .2, seq_len: 0x80, schedule: cosine, warmup: 5e-2}
logger: {wandb: {mode: disabled, tags: [a, 1, 2.5, null, true]}}
note: "quoted: text"
when: 2024-01-02
"""


def test_gather_rows_identical_with_either_yaml_loader(tmp_path: Path, monkeypatch):
    for i in range(3):
        run_dir = tmp_path / f"run{i}"
        run_dir.mkdir()
        text = CONFIG_TEXT.replace("tokens: 100000", f"tokens: {100000 + i}")
        atomic_write_text(run_dir / "config.yaml", text)
        meta = {"run_id": None, "format": "kmeans", "bits": 2, "P_w": 2.25, "N_quant": 98304, "D": 100000}
        atomic_write_json(run_dir / "run.json", meta)
        lines = [json.dumps({"step": s, "val_loss": 3.0 - s / 10}) for s in range(3)]
        atomic_write_text(run_dir / "metrics.jsonl", "\n".join(lines) + "\n")
        atomic_write_json(run_dir / "summary.json", {"status": "completed", "final_val_loss": 2.8})
    fast = fit.data.gather.gather([tmp_path]).rows
    monkeypatch.setattr(fit.data.gather, "SAFE_LOADER", yaml.SafeLoader)
    slow = fit.data.gather.gather([tmp_path]).rows
    assert len(fast) == 3
    assert fast == slow
    assert fast[0]["train.lr"] == 0.003 and fast[0]["quant.scale"] is None


def test_gather_identity_check_uses_the_fast_loader(tmp_path: Path):
    """compute_run_id of the (C-)parsed config.yaml still matches run.json: the run is a row, not refused."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {"model": {"d_model": 64}, "train": {"lr": 1e-4, "tokens": 1000}, "quant": {"qat_start": "auto"}}
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config))
    atomic_write_json(run_dir / "run.json", {"run_id": compute_run_id(config), "format": "none", "P_w": 16.0})
    atomic_write_json(run_dir / "summary.json", {"status": "completed", "final_val_loss": 2.5})
    result = fit.data.gather.gather([tmp_path])
    assert [r["run"] for r in result.rows] == [compute_run_id(config)] and not result.skipped


@pytest.mark.integration
@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("obj", OBJECTIVES[:2] + OBJECTIVES[3:], ids=lambda o: f"{o.loss}-{o.space}")
def test_lean_lbfgsb_is_scipy_minimize_bit_for_bit(spec, obj):
    """fit.solve.lbfgsb drives scipy's own L-BFGS-B routine without minimize's wrapper: same iterates, so the
    same
    x, objective, iteration count and message as minimize(method="L-BFGS-B"), cold and warm."""
    from scipy.optimize import minimize

    from fit.solve.lbfgsb import minimize_lbfgsb
    from fit.solve.optimize import bounds

    runs, rng = _runs(), np.random.default_rng(5)
    group = np.arange(len(runs)) % 2 if spec.n_gamma == 2 else None
    weight = rng.integers(0, 3, len(runs)).astype(float)
    data = FitData(runs["N"], runs["D"], runs["loss"], runs["P"] if spec.precision else None, group, weight)
    box = bounds(spec, float(runs["P"].min()) if spec.precision else None)
    warm = fit_law(data, spec, obj).theta
    for theta0 in (np.r_[[1.0, 8.0, 0.5], np.full(spec.n_params - 3, 0.4)], warm + 1e-3):
        if spec.offset:
            theta0[-1] = -0.5
        options = {"ftol": 0.0, "gtol": 1e-10, "maxiter": 10_000}
        ref = minimize(objective_and_grad, theta0, args=(data, spec, obj), jac=True, method="L-BFGS-B",
                       bounds=box, options=options)
        lean = minimize_lbfgsb(objective_and_grad, theta0, (data, spec, obj), box, 0.0, 1e-10, 10_000)
        np.testing.assert_array_equal(lean.x, ref.x)
        # (nfev is not compared: minimize's cache skips re-evaluations at a point it has seen, so its count
        # is lower; only the maxfun guard, 15000, reads it)
        assert (lean.fun, lean.nit, lean.status, lean.message) == (ref.fun, ref.nit, ref.status, ref.message)
