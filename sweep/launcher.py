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
- One Slurm array per batch and a rolling local pool: Slurm gets the whole batch as one job array
  (`array_parallelism` bounds it); local jobs run `hydra.launcher.parallel` at a time, the next starting as
  soon as any ends (the stock launcher starts a whole batch at once).
- `hydra.launcher.detach=true` submits, records the job ids in `SWEEP_DIR/.bitlaw/jobs.jsonl` and returns:
  no process stays alive until the jobs end. `bitlaw status SWEEP_DIR` then works from the sweep dir alone.

User errors (Slurm down, a request that can never fit, detach without Slurm) print one line, exit 2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sweep.composed import ComposedJob
from sweep.contract import (
    RUN,
    SLURM_UNFINISHED,
    Submission,
    append_submissions,
    atomic_write_text,
    config_snapshot_path,
    latest_submissions,
    ledger_dir,
    lock_holder,
    read_json,
    slurm_state_word,
)
from sweep.outcomes import (  # noqa: F401  (SweepSummary: named by sweep dirs' frozen configs)
    RunOutcome,
    SweepSummary,
    duration,
    job_outcome,
    job_return,
    local_final_state,
    loss_text,
    pool_outcome,
    record_outcome,
)
from sweep.slurm import SubmissionError, active_slurm_states, check_slurm_reachable
from sweep.submission import (
    captured_stderr,
    completed_summary,
    describe_rejection,
    expected_run_id,
    make_executor,
    submission_record,
    task_config,
    validate_job,
)

_POLL_S = 1.0           # how often to look for result pickles (a stat per job)
_SCHEDULER_POLL_S = 3.0  # how often to ask the scheduler (one sacct call for all jobs)
_CANCEL_WAIT_S = 10.0    # after ^C/SIGTERM: how long to wait for cancelled local jobs to exit


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
        # local runs on long-lived workers (sweep/pool.py) unless hydra.launcher.pool=false
        self.use_pool = bool(self.params.pop("pool", False))
        self.pool: Any = None
        parallel = self.params.pop("parallel", None)
        self.parallel = int(parallel) if parallel else (os.cpu_count() or 1)
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.outcomes: list[RunOutcome] = []
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.total_jobs: int | None = None
        self.started = time.monotonic()
        self.trained = 0  # runs that ended in this invocation (skipped ones excluded from the ETA)
        self.running: dict[str, tuple[str, Any]] = {}  # job_id -> (run, job): local jobs not yet ended

    def progress(self) -> str:
        """'12/54 · 42 left · 2m10s elapsed · ETA 7m35s': runs accounted for so far, for the user."""
        done = len(self.outcomes)
        elapsed = time.monotonic() - self.started
        if self.total_jobs is None:
            return f"{done} run(s) · {duration(elapsed)} elapsed"
        left = max(self.total_jobs - done, 0)
        eta = f" · ETA {duration(elapsed / self.trained * left)}" if self.trained and left else ""
        return f"{done}/{self.total_jobs} · {left} left · {duration(elapsed)} elapsed{eta}"

    # ---------------------------------------------------------------- the launch
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        import submitit
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.singleton import Singleton
        from omegaconf import OmegaConf, open_dict, read_write

        cluster, sweep_dir = self.cluster, self.sweep_dir
        self.total_jobs = len(job_overrides)
        if self.detach and cluster != "slurm":
            raise SubmissionError("--detach needs hydra/launcher=slurm (hydra.launcher.detach=true): local "
                                  "jobs are children of this process and would die with it")
        if cluster == "slurm":
            check_slurm_reachable()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        previous = latest_submissions(sweep_dir)
        live = active_slurm_states([s.job_id for s in previous.values() if s.executor == "slurm"])

        to_submit: list[tuple[str, Any, int, list[str]]] = []  # (run, composed config, job_num, overrides)
        returns: list = []
        loader = self.hydra_context.config_loader
        composed = []  # every job composed and checked before any is skipped, queued or printed
        for overrides in job_overrides:
            config = loader.load_sweep_config(self.config, list(overrides))
            # Same resolver-cache copy as Hydra's own launcher: ${now:} etc. agree across jobs.
            OmegaConf.copy_cache(from_config=self.config, to_config=config)
            HydraConfig.instance().set_config(config)
            task = task_config(config)
            validate_job(task, overrides, cluster)
            composed.append((config, expected_run_id(task)))
        for offset, (overrides, (config, run_id)) in enumerate(zip(job_overrides, composed, strict=True)):
            HydraConfig.instance().set_config(config)
            run = str(config.hydra.sweep.subdir)
            handled = self._already_handled(sweep_dir / run, run, run_id, previous.get(run), live)
            if handled is not None:
                self._keep(handled)
                print(f"[sweep] {'skip' if handled.state != 'failed' else 'refuse'} {run}: {handled.detail}"
                      f"  [{self.progress()}]", flush=True)
                returns.append(job_return(list(overrides), handled))
                continue
            with read_write(config.hydra.job), open_dict(config.hydra.job):
                config.hydra.job.num = initial_job_idx + offset
            to_submit.append((run, config, initial_job_idx + offset, list(overrides)))
        if not to_submit:
            return returns

        for run, config, _, _ in to_submit:
            atomic_write_text(config_snapshot_path(sweep_dir, run), OmegaConf.to_yaml(config))
        executor = make_executor(self.params, cluster)
        job = ComposedJob(self.hydra_context, self.task_function, Singleton.get_state())
        if cluster != "slurm" and self.use_pool:
            with self._cancel_local_jobs_on_signal():
                self._run_pool(job, to_submit, sweep_dir)
            return returns + self._returns_of(to_submit)
        if cluster != "slurm" and len(to_submit) > self.parallel:
            with self._cancel_local_jobs_on_signal():
                self._run_rolling(executor, job, to_submit, sweep_dir, cluster)
            return returns + self._returns_of(to_submit)
        try:
            # sbatch writes its rejection to the inherited stderr as well as into the exception; keep
            # it off the terminal so the user sees one line, and keep it in the error if it's not there.
            with captured_stderr() as sbatch_stderr:
                jobs = executor.map_array(job, [c for _, c, _, _ in to_submit],
                                          [n for _, _, n, _ in to_submit])
        except submitit.core.utils.FailedJobError as err:
            said = str(err) if "error:" in str(err) else "".join(sbatch_stderr)
            raise SubmissionError(describe_rejection(self.params, said)) from None
        else:
            sys.stderr.write("".join(sbatch_stderr))

        append_submissions(sweep_dir, [submission_record(sweep_dir, run, j, cluster, overrides)
                                       for (run, _, _, overrides), j in zip(to_submit, jobs, strict=True)])
        print(f"[sweep] submitted {len(jobs)} job(s) to {cluster}: {jobs[0].job_id}"
              + ("" if len(jobs) == 1 else f" … {jobs[-1].job_id}"), flush=True)
        if cluster != "slurm":
            print(f"[sweep] running: {', '.join(run for run, *_ in to_submit)}", flush=True)
        if self.detach:
            for (run, *_), j in zip(to_submit, jobs, strict=True):
                self._keep(RunOutcome(run, "submitted", j.job_id))
            return returns + self._returns_of(to_submit)

        run_of_job = {j.job_id: run for (run, *_), j in zip(to_submit, jobs, strict=True)}
        if cluster != "slurm":
            self.running.update({j.job_id: (run_of_job[j.job_id], j) for j in jobs})
        # Slurm jobs outlive this process by design (a ^C here leaves them queued; `bitlaw status` follows)
        with self._cancel_local_jobs_on_signal() if cluster != "slurm" else contextlib.nullcontext():
            self._wait_for(jobs, cluster,
                           lambda j, state: self._record(sweep_dir, run_of_job[j.job_id], j, state))
        return returns + self._returns_of(to_submit)

    def _returns_of(self, submitted: list) -> list:
        """A JobReturn per submitted run, in order, carrying the task's return value where it has one.

        A failed run gets status COMPLETED with no value: Hydra's sweepers raise on a FAILED return and would
        stop the sweep; the failure is reported in the outcome lines and the sweep's exit status instead."""
        by_run = {o.run: o for o in self.outcomes}
        return [job_return(overrides, by_run.get(run)) for run, _, _, overrides in submitted]

    def _keep(self, outcome: RunOutcome) -> None:
        self.outcomes.append(outcome)
        record_outcome(self.sweep_dir, outcome)

    def _record(self, sweep_dir: Path, run: str, job: Any, final_state: str) -> None:
        """One finished job: its outcome, printed with the sweep's progress."""
        outcome = job_outcome(sweep_dir, run, job, final_state)
        self.running.pop(job.job_id, None)
        self._keep(outcome)
        self.trained += 1
        print(f"[sweep] {outcome.state:9s} {outcome.run}  {outcome.detail}  [{self.progress()}]", flush=True)

    def _run_rolling(self, executor: Any, job: Any, to_submit: list, sweep_dir: Path, cluster: str) -> None:
        """Local jobs through a pool of `parallel` slots: the next run starts as soon as any run ends."""
        pending = list(to_submit)
        running = self.running  # job_id -> (run, job); _record drops a job once it ends
        while pending or running:
            while pending and len(running) < self.parallel:
                run, config, job_num, overrides = pending.pop(0)
                submitted = executor.submit(job, config, job_num)
                record = submission_record(sweep_dir, run, submitted, cluster, overrides)
                append_submissions(sweep_dir, [record])
                print(f"[sweep] started   {run}  (job {submitted.job_id})", flush=True)
                running[submitted.job_id] = (run, submitted)
            time.sleep(_POLL_S)
            for run, submitted in list(running.values()):
                final_state = local_final_state(submitted)
                if final_state is None:
                    continue
                self._record(sweep_dir, run, submitted, final_state)

    def _run_pool(self, job: Any, to_submit: list, sweep_dir: Path) -> None:
        """Local runs on `parallel` long-lived workers that import torch once (sweep/pool.py)."""
        import cloudpickle

        from sweep.pool import Task, WorkerPool

        logs = ledger_dir(sweep_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        tasks, overrides_of = [], {}
        for run, config, job_num, overrides in to_submit:
            flat = run.replace(os.sep, "%2F")
            payload = cloudpickle.dumps((job, (config, job_num, f"{job_num}")))
            tasks.append(Task(run, payload, logs / f"{flat}.out", logs / f"{flat}.err"))
            overrides_of[run] = overrides
        self.pool = WorkerPool(self.parallel, warm_imports=("torch", "sweep.train"),
                               env={"SUBMITIT_EXECUTOR": "local"})

        def started(task: Task, pid: int) -> None:
            rel = lambda p: os.path.relpath(p, sweep_dir)  # noqa: E731
            append_submissions(sweep_dir, [Submission(
                run=task.key, job_id=str(pid), executor="local",
                submitted=datetime.now(timezone.utc).isoformat(timespec="seconds"), stdout=rel(task.stdout),
                stderr=rel(task.stderr), config=rel(config_snapshot_path(sweep_dir, task.key)),
                overrides=overrides_of[task.key])])
            print(f"[sweep] started   {task.key}  (worker {pid})", flush=True)

        interrupted = False
        try:
            for finished in self.pool.run(tasks, started):
                outcome = pool_outcome(sweep_dir, finished)
                self._keep(outcome)
                self.trained += 1
                print(f"[sweep] {outcome.state:9s} {outcome.run}  {outcome.detail}  [{self.progress()}]",
                      flush=True)
        except _Interrupted:
            interrupted = True  # _cancel_running ends the workers and reports their runs as cancelled
            raise
        finally:
            if not interrupted:
                self.pool.close()
                self.pool = None

    @contextlib.contextmanager
    def _cancel_local_jobs_on_signal(self) -> Iterator[None]:
        """SIGINT or SIGTERM to this submitter ends its local jobs too, and says so. They are its children
        but not in the way of a `kill PID` (only ^C reaches the whole process group): left running, they
        would train on unwatched, and the next sweep would start second copies beside them."""
        signals = (signal.SIGINT, signal.SIGTERM)

        def stop(signum: int, frame: Any) -> None:
            for sig in signals:  # one clean-up: a second ^C must not interrupt the cancelling
                signal.signal(sig, signal.SIG_IGN)
            raise _Interrupted(signum)

        try:
            previous = {sig: signal.signal(sig, stop) for sig in signals}
        except ValueError:  # not the main thread: signals cannot be caught here
            yield
            return
        try:
            yield
        except _Interrupted as interrupted:
            self._cancel_running(interrupted.signum)
            raise SystemExit(128 + interrupted.signum) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _cancel_running(self, signum: int) -> None:
        if self.pool is not None:  # pooled workers: terminate them; their runs are cancelled
            self.running = {f"worker-{i}": (run, None) for i, run in enumerate(self.pool.close())}
            self.pool = None
        jobs = [(run, job) for run, job in self.running.values() if job is not None]
        cut = [run for run, job in self.running.values() if job is None]
        for _, job in jobs:
            job.cancel(check=False)  # SIGINT to submitit's controller, which kills the training process
        deadline = time.monotonic() + _CANCEL_WAIT_S
        while time.monotonic() < deadline and not all(job.done() for _, job in jobs):
            time.sleep(0.1)
        for run, job_id in [(run, job.job_id) for run, job in jobs] + [(run, "") for run in cut]:
            self._keep(RunOutcome(run, "cancelled", job_id, f"submitter stopped by "
                                  f"{signal.Signals(signum).name}"))
        self.running.clear()
        runs = ", ".join([run for run, _ in jobs] + cut) or "none were running"
        n_cancelled = len(jobs) + len(cut)
        print(f"[sweep] stopped by {signal.Signals(signum).name}: cancelled {n_cancelled} local job(s) "
              f"({runs}); run the same command again to train them (completed runs are skipped)",
              file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _already_handled(run_dir: Path, run: str, expected_run_id: str | None, previous: Submission | None,
                         live: dict[str, str]) -> RunOutcome | None:
        """An outcome for a run that must not be submitted now, else None."""
        if previous is not None and previous.job_id in live:
            # first: whatever its dir holds, a job of this run is still queued or running (a config edited
            # since is not this job's: it runs the config frozen at its submission)
            return RunOutcome(run, "queued", previous.job_id,
                              f"already in Slurm as job {previous.job_id} ({live[previous.job_id]})")
        run_id = (read_json(run_dir / RUN) or {}).get("run_id")
        if expected_run_id is not None and run_id is not None and run_id != expected_run_id:
            # Same directory, different experiment (conf/ changed, or a run.json copied from another run):
            # never overwrite it, and never let its numbers pass for this run's (gather refuses it too).
            return RunOutcome(run, "failed", detail=f"its run.json holds run_id {run_id} but this job's "
                              f"config gives {expected_run_id}; to train it, move the dir aside "
                              f"(mv '{run_dir}' '{run_dir}.old') and run the same command again, or use a "
                              "new sweep.name")
        summary = completed_summary(run_dir)
        if summary is not None:
            return RunOutcome(run, "skipped", detail=f"completed (run_id {run_id}, "
                                                     f"final_val_loss {loss_text(summary)})")
        holder = lock_holder(run_dir)
        if holder is not None:
            # another submitter's job (or a single run) is training this dir now: a second copy would
            # interleave its metrics and checkpoint; it fails fast on the lock anyway
            return RunOutcome(run, "busy", detail=f"being trained by {holder} (another submitter?); not "
                              "submitted again: wait for it, or stop it and run the same command again")
        return None

    @staticmethod
    def _wait_for(jobs: list, cluster: str, on_finish: Any) -> None:
        """Block until every job has a result pickle or a final scheduler state; ``on_finish(job,
        final_state)`` is called once per job as soon as it ends."""
        finished: dict[str, str] = {}
        last_scheduler_poll = 0.0
        while len(finished) < len(jobs):
            ask_scheduler = time.monotonic() - last_scheduler_poll >= _SCHEDULER_POLL_S
            if ask_scheduler and cluster == "slurm":
                jobs[0].watcher.update()  # one sacct call for every job of this sweep
                last_scheduler_poll = time.monotonic()
            for j in jobs:
                if j.job_id in finished:
                    continue
                if cluster != "slurm":
                    local_state = local_final_state(j)
                    if local_state is not None:
                        finished[j.job_id] = local_state
                elif j.paths.result_pickle.exists():
                    finished[j.job_id] = "RESULT"
                elif ask_scheduler:
                    state = j.watcher.get_state(j.job_id, mode="cache")
                    if slurm_state_word(state) not in SLURM_UNFINISHED:
                        finished[j.job_id] = state
                if j.job_id in finished:
                    on_finish(j, finished[j.job_id])
            if len(finished) < len(jobs):
                time.sleep(_POLL_S)


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


