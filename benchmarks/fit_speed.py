"""Fit speed, printed side by side (no assertions): bitlaw's fitter against the `chinchilla` 0.2.0 package.

    .venv/bin/python benchmarks/fit_speed.py               # everything (chinchilla takes ~1 min)
    .venv/bin/python benchmarks/fit_speed.py --no-chinchilla
    .venv/bin/python benchmarks/fit_speed.py --gather-only

1. Epoch AI's 240 Chinchilla points (5 highest losses dropped, D = C/6N), Huber δ=1e-3 on log loss:
   bitlaw's default fit (4500-start grid screened vectorised, best few starts by L-BFGS-B) against
   `chinchilla.Chinchilla` with the same 4500-start grid and `log_huber(δ=1e-3)`; wall time, ratio and the
   *summed* Huber objective of both answers, computed by the same function.
2. Precision law on a 200-run synthetic grid: one fit, then 1000 bootstrap refits on 1 and 2 workers, and
   the cost of one objective evaluation (what L-BFGS-B pays hundreds of times per refit).
3. The demo table (results/demo/runs.csv, 108 runs, --law precision --by format): the bootstrap per format
   with 2 workers, every resample by L-BFGS-B (fit.solve.staged.refit_any: before) and by
   fit/solve/batched.py's
   batched Newton refit with its L-BFGS-B fallback (after), same resamples, and the 95 % CIs of both side
   by side.  ``--demo-resamples`` (default 200) sets K; the figure is scaled to seconds per 1000 resamples
   per format (issue 14's target: <= 10 s); ``--two-stage`` times the two-stage fit, whose bootstrap
   keeps L-BFGS-B (both lines then take that path).  Measured, K = 200, 2 cores: joint 55.2 s -> 29.8 s
   per format per 1000 at load 1.9 (two bootstrap chunks per worker; 228.0 -> 194.2 s at load 6.2-6.6
   with chunks of 50), CIs moved <= 1.5e-4 of their width; two-stage through refit_batch, before
   fit.solve.bootstrap stopped using it there, load 4.4-5.3: 90.6 s -> 104.4 s.  The whole
   `bitlaw fit ... --bootstrap 1000`: 3 min 52 s (user 3:04, load ~3) -> 1 min 18 s (user 1:38, load ~2.6).
   With up to 5000 Newton steps (fit/solve/batched.py MAX_ITER; 2026-12-02, load 1.4): 28.3 s per format per
   1000
   (L-BFGS-B alone 44.9 s), and the whole command 44 s idle (60 s with the 500-step cap).  With the
   Levenberg-Marquardt damping and floor stalls kept (fit/solve/batched.py FLOOR_GTOL; a new, faster machine,
   K = 1000, load 0.6-1.3): 7.1 -> 3.4 s per format per 1000 (L-BFGS-B alone 15.7 s).
4. ``bitlaw gather`` of 10,000 synthetic run dirs written in a temp dir with the run-dir contract's own
   writers (run.json, summary.json, metrics.jsonl, config.json + config.yaml), against a plain reader of
   run.json, summary.json, metrics.jsonl and config.yaml (issue 14's ≤ 2 s; 2026-12-02, load ~1.1: gather
   3.15 s when it read config.yaml, the plain reader 2.29 s).
The machine's load average is printed next to the figures: timings on a shared box are only comparable at
similar load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.solve.bootstrap import BootJob, run_bootstrap
from fit.solve.objective import FitData, LawSpec, Objective, named_params, objective_and_grad
from fit.solve.optimize import fit_law

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "epoch_chinchilla_svg_extracted_data.csv"


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def epoch_240() -> pd.DataFrame:
    raw = pd.read_csv(DATA)
    kept = raw[raw["loss"] < sorted(raw["loss"])[-5]]
    n = kept["Model Size"].to_numpy()
    c = kept["Training FLOP"].to_numpy()
    return pd.DataFrame({"C": c, "N": n, "D": c / (6 * n), "loss": kept["loss"].to_numpy()})


def summed_huber(params: dict[str, float], data: FitData) -> float:
    theta = np.log([params["A"], params["B"], params["E"]]).tolist() + [params["alpha"], params["beta"]]
    return objective_and_grad(np.asarray(theta), data, LawSpec(), Objective())[0]


def log_huber_1e3(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """chinchilla's own log_huber with Epoch's δ (its default δ is 1.0)."""
    from chinchilla._metrics import log_huber

    return log_huber(y_true, y_pred, delta=1e-3)


def run_chinchilla(frame: pd.DataFrame) -> tuple[dict[str, float], float]:
    import logging

    from chinchilla import Chinchilla

    grid = {  # Epoch's grid; lower-case keys mean log-space e, a, b; key order = E, A, B, alpha, beta
        "e": np.arange(-1, 1.01, 0.5),
        "a": np.arange(0, 25.1, 5),
        "b": np.arange(0, 25.1, 5),
        "alpha": np.arange(0, 2.01, 0.5),
        "beta": np.arange(0, 2.01, 0.5),
    }
    with tempfile.TemporaryDirectory() as project:
        frame[["C", "N", "D", "loss"]].to_csv(Path(project) / "df.csv", index=False)
        model = Chinchilla(project, param_grid=grid, loss_fn=log_huber_1e3, log_level=logging.WARNING)
        start = time.perf_counter()
        model.fit()
        return model.params, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-chinchilla", action="store_true", help="skip the (slow) chinchilla comparison")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--gather-runs", type=int, default=10_000, help="run dirs for the gather timing")
    parser.add_argument("--gather-only", action="store_true", help="only the gather timing")
    parser.add_argument("--demo-resamples", type=int, default=200, help="K for the demo-table bootstrap")
    parser.add_argument("--demo-only", action="store_true", help="only the demo-table bootstrap timing")
    parser.add_argument("--two-stage", action="store_true", help="demo-table bootstrap of the two-stage fit")
    args = parser.parse_args()
    print(f"start: {load_average()}")
    if args.gather_only:
        gather_section(args.gather_runs)
        return
    if args.demo_only:
        demo_bootstrap_section(args.demo_resamples, args.two_stage)
        return

    frame = epoch_240()
    data = FitData(frame["N"], frame["D"], frame["loss"])
    fit_law(data, LawSpec(), Objective())  # warm-up: first-call import and allocation costs are not the fit
    times = []
    for _ in range(5):
        start = time.perf_counter()
        result = fit_law(data, LawSpec(), Objective())
        times.append(time.perf_counter() - start)
    ours = named_params(result.theta, LawSpec())[0]
    t_ours = statistics.median(times)
    print(f"\nEpoch 240 points, Huber delta=1e-3 on log loss, summed objective  ({load_average()})")
    print(
        f"  bitlaw default fit   {t_ours:8.3f} s (median of 5; min {min(times):.3f} s)  objective "
        f"{summed_huber(ours, data):.10f}  starts screened {result.n_starts_screened}, optimised "
        f"{result.n_starts_optimised}  A={ours['A']:.2f} B={ours['B']:.1f} E={ours['E']:.4f} "
        f"alpha={ours['alpha']:.5f} beta={ours['beta']:.5f}"
    )
    if not args.no_chinchilla:
        theirs, t_theirs = run_chinchilla(frame)
        print(
            f"  chinchilla 0.2.0     {t_theirs:8.3f} s (one run, {os.cpu_count()} processes)  objective "
            f"{summed_huber(theirs, data):.10f}  A={theirs['A']:.2f} B={theirs['B']:.1f} "
            f"E={theirs['E']:.4f} alpha={theirs['alpha']:.5f} beta={theirs['beta']:.5f}"
        )
        print(f"  speed-up             {t_theirs / t_ours:8.1f} x   ({load_average()})")

    N, D = np.geomspace(1e6, 1e9, 8), np.geomspace(1e8, 1e10, 5)
    runs = simulate(KMEANS_TRUTH, N, D, bits=(1, 2, 3, 4), noise=0.005, seed=0)  # 8·5·(4 + anchor) = 200 runs
    pdata = FitData(runs["N"], runs["D"], runs["loss"], runs["P"])
    spec = LawSpec(precision=True)
    start = time.perf_counter()
    presult = fit_law(pdata, spec, Objective())
    t_fit = time.perf_counter() - start
    print(f"\nPrecision law, {len(runs)} synthetic runs (0.5 % noise, 16-bit anchor)  ({load_average()})")
    print(
        f"  fit                  {t_fit:8.3f} s  ({presult.n_starts_screened} starts screened, "
        f"{presult.n_starts_optimised} optimised, converged={presult.converged})  "
        f"gamma={named_params(presult.theta, spec)[0]['gamma']:.4f}"
    )
    job = BootJob(pdata, spec, Objective(), presult.theta, np.arange(len(runs)))
    for workers in (1, 2):
        start = time.perf_counter()
        draws = run_bootstrap(
            [job], np.arange(len(runs)), args.resamples, seed=0, workers=workers, progress=False
        )
        t_boot = time.perf_counter() - start
        gammas = np.exp(draws[0][:, 5])
        print(
            f"  bootstrap x{args.resamples} {workers} worker(s) {t_boot:7.2f} s  gamma 95% CI "
            f"[{np.percentile(gammas, 2.5):.3f}, {np.percentile(gammas, 97.5):.3f}]  ({load_average()})"
        )
    start, calls = time.perf_counter(), 2000
    for _ in range(calls):
        objective_and_grad(presult.theta, pdata, spec, Objective())
    per_call = (time.perf_counter() - start) / calls
    print(f"  objective+gradient   {1e6 * per_call:8.1f} us per call on {len(runs)} rows")
    demo_bootstrap_section(args.demo_resamples)
    gather_section(args.gather_runs)


def demo_bootstrap_section(resamples: int, two_stage: bool = False) -> None:
    """Before/after on the demo table, same draws: every resample by L-BFGS-B (fit.solve.staged.refit_any,
    the path
    before fit/solve/batched.py) and by the batched Newton refit with its L-BFGS-B fallback; CIs side by
    side."""
    import fit.solve.bootstrap
    from fit.data.table import load_table
    from fit.solve.bootstrap import finite_percentile_ci as percentile_ci
    from fit.solve.pipeline import FitOptions, build_jobs
    from fit.solve.resampling import bootstrap_strata, bootstrap_units
    from fit.solve.staged import fit_any, params_of

    path = Path(__file__).resolve().parents[1] / "results" / "demo" / "runs.csv"
    if not path.is_file():
        print(f"\ndemo-table bootstrap: {path} not found (make demo writes it); skipped")
        return
    table = load_table(path, require=("N", "D", "loss", "P", "format"))
    opts = FitOptions(law="precision", by="format", two_stage=two_stage)
    jobs = build_jobs(table, opts)
    units, _ = bootstrap_units(table.frame)
    strata, _ = bootstrap_strata(table.frame, units)
    fits = [fit_any(j.data, j.spec, opts.objective, two_stage=two_stage).theta for j in jobs]
    boot = [
        BootJob(j.data, j.spec, opts.objective, t, j.row_ids, two_stage)
        for j, t in zip(jobs, fits, strict=True)
    ]
    kind = "two-stage" if two_stage else "joint"
    print(f"\nDemo table, {len(table.frame)} runs, precision law ({kind}), bootstrap x{resamples}, 2 workers")
    supports = fit.solve.bootstrap.batched.supports
    draws = {}
    for label, batched_on in (("before (L-BFGS-B)", False), ("after (batched)", True)):
        fit.solve.bootstrap.batched.supports = supports if batched_on else (lambda spec, obj: False)
        start = time.perf_counter()
        draws[label] = run_bootstrap(
            boot, units, resamples, seed=0, workers=2, progress=False, stratum_of_unit=strata
        )
        per_format = (time.perf_counter() - start) / len(boot) * 1000 / resamples
        print(f"  {label:18s} {per_format:7.1f} s per format per 1000 resamples  ({load_average()})")
    fit.solve.bootstrap.batched.supports = supports
    for job, old, new in zip(jobs, *draws.values(), strict=True):
        for group, name in enumerate(job.names):
            for key in params_of(old[0], job.spec)[group]:
                a = percentile_ci(np.array([params_of(t, job.spec)[group][key] for t in old]))
                b = percentile_ci(np.array([params_of(t, job.spec)[group][key] for t in new]))
                shift = max(abs(a[0] - b[0]), abs(a[1] - b[1])) / (a[1] - a[0])
                ci = f"CI before [{a[0]:.6g}, {a[1]:.6g}]  after [{b[0]:.6g}, {b[1]:.6g}]"
                print(f"  {name:8s} {key:6s} {ci}  shift {shift:.1e} of the width")


CONFIG = {  # the shape of a resolved config.yaml (sweep/train.py writes OmegaConf's YAML of it)
    "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 192, "vocab_size": 256},
    "quant": {"format": "kmeans", "bits": 2, "block_size": 64, "scale": "absmax", "qat_start": 0.0},
    "train": {
        "lr": 0.003,
        "tokens": 100000,
        "seed": 0,
        "batch_tokens": 2048,
        "seq_len": 128,
        "warmup": 0.05,
        "schedule": "cosine",
        "weight_decay": 0.1,
        "grad_clip": 1.0,
        "eval_every": 10,
    },
    "data": {"corpus": "stdlib", "dtype": "uint16", "val_fraction": 0.05, "path": None},
    "logger": {"wandb": {"mode": "disabled", "project": "bitlaw", "tags": []}},
    "sweep": {"name": "bench"},
}


def write_run_dirs(root: Path, n_runs: int) -> None:
    """n_runs completed run dirs, each with the five files a finished job leaves (the contract's writers)."""
    import copy

    from sweep.contract import METRICS, RUN, SUMMARY, atomic_write_json, compute_run_id
    from sweep.rundir import MetricsLog, write_config

    for i in range(n_runs):
        config = copy.deepcopy(CONFIG)
        config["train"]["tokens"] = 100_000 + i
        run_dir = root / f"model=base,point=k{i % 4},train.tokens={100_000 + i}"
        run_dir.mkdir(parents=True)
        write_config(run_dir, config)  # config.json and config.yaml, as a job writes them
        meta = {
            "run_id": compute_run_id(config),
            "format": "kmeans",
            "bits": 2,
            "P_w": 2.25,
            "N_total": 131392,
            "N_nonembed": 98624,
            "N_quant": 98304,
            "N_hp": 33088,
            "D": 100_000 + i,
            "seed": 0,
        }
        atomic_write_json(run_dir / RUN, meta)
        log = MetricsLog(run_dir / METRICS)
        for step in range(12):  # a demo run's 12 log lines
            log.append({"step": 10 * step, "loss": 3.0 - 0.01 * step, "val_loss": 3.1 - 0.01 * step})
        summary = {"status": "completed", "final_val_loss": 2.9, "tokens_seen": 100_000 + i, "wall_s": 4.0}
        atomic_write_json(run_dir / SUMMARY, summary)


def plain_read(root: Path) -> int:
    """A plain reader of what gather read before config.json: the four files per dir, json and C-yaml, no
    checks, no rows."""
    import json

    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    count = 0
    for run_dir in sorted(p.parent for p in root.glob("*/run.json")):
        json.loads((run_dir / "run.json").read_text())
        json.loads((run_dir / "summary.json").read_text())
        count += len([json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x])
        yaml.load((run_dir / "config.yaml").read_text(), Loader=loader)
    return count


def gather_section(n_runs: int) -> None:
    from fit.data.gather import gather

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sweep"
        start = time.perf_counter()
        write_run_dirs(root, n_runs)
        built = time.perf_counter() - start
        print(f"\nbitlaw gather, {n_runs} synthetic run dirs (written in {built:.1f} s)")
        plain_read(root)  # warm the page cache: both timings below read from memory
        start = time.perf_counter()
        plain_read(root)
        t_plain = time.perf_counter() - start
        start = time.perf_counter()
        result = gather([root])
        t_gather = time.perf_counter() - start
        print(
            f"  fit.data.gather.gather    {t_gather:8.2f} s  ({len(result.rows)} rows, "
            f"{len(result.skipped)} skipped)  ({load_average()})"
        )
        print(f"  plain reader         {t_plain:8.2f} s  (json + C-yaml, same files)  ({load_average()})")


if __name__ == "__main__":
    main()
