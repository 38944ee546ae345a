"""What the bitlaw launcher plugin does (hydra_plugins/bitlaw_launcher): launch a sweep through submitit with
frozen configs, idempotent re-runs, an outcome for every run, and a detached mode.

It differs from hydra-submitit-launcher 1.2.0 in five ways:

- Frozen configs. The stock launcher re-composes each job's config from conf/ when the job *starts*, so
  editing conf/ while jobs are queued changes them. Here every job's config is composed at submission,
  written to `SWEEP_DIR/.bitlaw/configs/<run>.yaml` and handed to the job, which never reads conf/.
- Idempotent re-sweeps. A run whose summary says completed is skipped, and so is one whose Slurm job from
  an earlier submission is still pending or running; failed and cancelled runs are submitted again.
- Every run ends with an outcome. The stock launcher raises at the first failed job and hangs on none;
  here the launcher waits for all jobs, then prints one line per run (done / failed / cancelled), and
  records each in `SWEEP_DIR/.bitlaw/outcomes.jsonl` (the sweep's closing summary reads them).
- One Slurm array per batch and a local worker pool: Slurm gets the whole batch as one job array
  (`array_parallelism` bounds it); local runs go to `hydra.launcher.parallel` long-lived workers that import
  torch once (sweep/pool.py), the next run starting as soon as any ends (the stock launcher starts a
  process per job, a whole batch at once). Both go through one wait loop and one outcome classifier
  (sweep/launch/jobs.py, `outcomes.classify`).
- `hydra.launcher.detach=true` submits, records the job ids in `SWEEP_DIR/.bitlaw/jobs.jsonl` and returns:
  no process stays alive until the jobs end. `bitlaw status SWEEP_DIR` then works from the sweep dir alone.

User errors (Slurm down, a request that can never fit, detach without Slurm) print one line, exit 2.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweep.composed import ComposedJob
from sweep.contract import RunOutcomeState, atomic_write_text, config_snapshot_path, latest_submissions
from sweep.launch.jobs import LocalPool, PlannedRun, SlurmArray
from sweep.launch.progress import SweepProgress
from sweep.launch.signals import cancel_on_signal
from sweep.launch.skip import already_handled
from sweep.outcomes import (  # noqa: F401  (SweepSummary: named by sweep dirs' frozen configs)
    RunOutcome,
    SweepSummary,
    classify,
    job_return,
)
from sweep.slurm import SubmissionError, active_slurm_states, check_slurm_reachable
from sweep.submission import expected_run_id, task_config, validate_job

POOL_REMOVED = ("hydra.launcher.pool: removed; local runs always go to the worker pool (sweep/pool.py: "
                "long-lived workers, each run with its own log files, a run that kills its worker failing "
                "alone); drop the key")


class SweepLauncher:
    """One `launch` call of the plugin: the batch's runs, submitted or skipped, each with an outcome.

    `params` are the `hydra.launcher` keys (resolved), `config` the multirun config, `hydra_context` and
    `task_function` what Hydra handed the plugin's `setup`.
    """

    def __init__(self, cluster: str, params: dict[str, Any], config: Any, hydra_context: Any,
                 task_function: Any) -> None:
        self.cluster = cluster
        self.params = dict(params)
        self.detach = bool(self.params.pop("detach", False))
        if self.params.pop("pool", None) is not None:  # the process-per-run local path is gone
            raise SubmissionError(POOL_REMOVED)
        parallel = self.params.pop("parallel", None)
        # checked, not coerced: 0 used to mean "one per core" and a negative width a pool of one
        if parallel is not None and (type(parallel) is not int or parallel < 1):
            raise SubmissionError(f"hydra.launcher.parallel must be an integer >= 1 (runs at once) or null "
                                  f"(one per core), got {parallel!r}")
        self.parallel = parallel if parallel is not None else (os.cpu_count() or 1)
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.progress = SweepProgress(self.sweep_dir, 0)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        from hydra.core.singleton import Singleton
        from omegaconf import OmegaConf

        self.progress = SweepProgress(self.sweep_dir, len(job_overrides))
        if self.detach and self.cluster != "slurm":
            raise SubmissionError("--detach needs hydra/launcher=slurm (hydra.launcher.detach=true): local "
                                  "jobs are children of this process and would die with it")
        if self.cluster == "slurm":
            check_slurm_reachable()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        returns, planned = self._plan(job_overrides, initial_job_idx)
        if not planned:
            return returns
        for p in planned:
            atomic_write_text(config_snapshot_path(self.sweep_dir, p.run), OmegaConf.to_yaml(p.config))
        job = ComposedJob(self.hydra_context, self.task_function, Singleton.get_state())
        if self.cluster == "slurm":
            self._launch_on_slurm(planned, job)
        else:
            self._launch_on_pool(planned, job)
        by_run = self.progress.by_run()
        return returns + [job_return(p.overrides, by_run.get(p.run)) for p in planned]

    def _plan(self, job_overrides: Sequence[Sequence[str]],
              initial_job_idx: int) -> tuple[list, list[PlannedRun]]:
        """(the sweeper's returns for runs not to submit now, the runs to submit): every job composed and
        checked before any is skipped, queued or printed."""
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf, open_dict, read_write

        previous = latest_submissions(self.sweep_dir)
        live = active_slurm_states([s.job_id for s in previous.values() if s.executor == "slurm"])
        loader = self.hydra_context.config_loader
        composed = []
        for offset, overrides in enumerate(job_overrides):
            config = loader.load_sweep_config(self.config, list(overrides))
            # Same resolver-cache copy as Hydra's own launcher: ${now:} etc. agree across jobs.
            OmegaConf.copy_cache(from_config=self.config, to_config=config)
            with read_write(config.hydra.job), open_dict(config.hydra.job):
                # before the run dir is named: Hydra's default hydra.sweep.subdir is ${hydra.job.num}
                config.hydra.job.num = initial_job_idx + offset
            HydraConfig.instance().set_config(config)
            task = task_config(config)
            validate_job(task, overrides, self.cluster, self.params)
            composed.append((config, expected_run_id(task)))
        returns, planned = [], []
        for offset, (overrides, (config, run_id)) in enumerate(zip(job_overrides, composed, strict=True)):
            HydraConfig.instance().set_config(config)
            run = str(config.hydra.sweep.subdir)
            handled = already_handled(self.sweep_dir / run, run, run_id, previous.get(run), live)
            if handled is not None:
                self.progress.keep(handled)
                verb = "skip" if handled.state != RunOutcomeState.FAILED else "refuse"
                print(f"[sweep] {verb} {run}: {handled.detail}"
                      f"  [{self.progress.line()}]", flush=True)
                returns.append(job_return(list(overrides), handled))
                continue
            planned.append(PlannedRun(run, config, initial_job_idx + offset, list(overrides)))
        return returns, planned

    def _wait(self, backend: LocalPool | SlurmArray) -> None:
        """The one wait loop: each run's outcome, classified and printed as soon as it ends."""
        for ended in backend.ended():
            self.progress.ended(classify(self.sweep_dir, ended))

    def _launch_on_pool(self, planned: list[PlannedRun], job: ComposedJob) -> None:
        pool = LocalPool(self.sweep_dir, self.parallel)
        pool.start(planned, job)
        with cancel_on_signal(lambda signum: self._report_cancelled(pool.close(), signum)):
            try:
                self._wait(pool)
            finally:  # on every exit path, a ^C included: no worker outlives the submitter
                pool.close()

    def _launch_on_slurm(self, planned: list[PlannedRun], job: ComposedJob) -> None:
        array = SlurmArray(self.sweep_dir, self.params)
        ids = array.submit(planned, job)
        print(f"[sweep] submitted {len(ids)} job(s) to slurm: {ids[0]}"
              + ("" if len(ids) == 1 else f" … {ids[-1]}"), flush=True)
        if self.detach:
            for (run, _), job_id in zip(array.jobs, ids, strict=True):
                self.progress.keep(RunOutcome(run, RunOutcomeState.SUBMITTED, job_id))
            return
        # Slurm jobs outlive this process by design (a ^C here leaves them queued; `bitlaw status` follows)
        self._wait(array)

    def _report_cancelled(self, cut: list[tuple[str, str]], signum: int) -> None:
        """The runs a SIGINT/SIGTERM cut off (their workers already ended): recorded as cancelled."""
        name = signal.Signals(signum).name
        for run, job_id in cut:
            self.progress.keep(RunOutcome(run, RunOutcomeState.CANCELLED, job_id,
                                          f"submitter stopped by {name}"))
        runs = ", ".join(run for run, _ in cut) or "none were running"
        print(f"[sweep] stopped by {name}: cancelled {len(cut)} local job(s) ({runs}); run the same command "
              "again to train them (completed runs are skipped)", file=sys.stderr, flush=True)
