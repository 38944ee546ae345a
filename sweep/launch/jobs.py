"""The two ways a batch of runs is launched, behind one Job-like interface (as submitit gives each executor
the same Job): `LocalPool` runs them on long-lived local workers (sweep/pool.py), `SlurmArray` submits them as
one Slurm job array. Each yields its runs as they end, as `EndedJob`s (sweep/outcomes.py), which the
launcher's one wait loop hands to the one classifier, `outcomes.classify`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sweep.contract import (
    SLURM_UNFINISHED,
    Submission,
    append_submissions,
    config_snapshot_path,
    ledger_dir,
    slurm_state_word,
)
from sweep.outcomes import JobFailed, error_line, log_tail
from sweep.pool import Finished, Task, WorkerPool
from sweep.slurm import SubmissionError
from sweep.submission import captured_stderr, describe_rejection, make_executor, submission_record

_POLL_S = 1.0            # how often to look for Slurm result pickles (a stat per job)
_SCHEDULER_POLL_S = 3.0  # how often to ask the scheduler (one sacct call for all jobs)


@dataclass
class PlannedRun:
    """A run to launch: its dir (relative to the sweep dir), its composed config, Hydra's job number, and
    the overrides that made it."""

    run: str
    config: Any
    job_num: int
    overrides: list[str]


class PoolRun:
    """A pool run that has ended, as an EndedJob: it always ends with the run's result or its error."""

    final_state = "RESULT"

    def __init__(self, finished: Finished) -> None:
        self.run, self.job_id = finished.key, str(finished.worker_pid)
        self.finished = finished

    def result(self) -> Any:
        if not self.finished.ok:  # the run raised, or killed its worker
            raise JobFailed(self.finished.error)
        return self.finished.value

    def log_tail(self) -> str:
        return ""  # never asked: a pool run has no scheduler state to end in


class SlurmRun:
    """A Slurm job that has ended, as an EndedJob: with its result pickle (RESULT) or a final Slurm state."""

    def __init__(self, run: str, job: Any, final_state: str) -> None:
        self.run, self.job_id, self.final_state = run, job.job_id, final_state
        self.job = job

    def result(self) -> Any:
        try:
            return self.job.results()[0]
        except Exception as err:  # submitit re-raises the job's error; ComposedJob wrote its summary
            raise JobFailed(error_line(str(err))) from None

    def log_tail(self) -> str:
        return log_tail(self.job.paths.stderr, 3)


class LocalPool:
    """Local runs on `parallel` long-lived workers that import torch once, the next run starting as soon as
    any ends. Each run's stdout/stderr go to SWEEP_DIR/.bitlaw/logs/<run>.out|.err."""

    def __init__(self, sweep_dir: Path, parallel: int) -> None:
        self.sweep_dir = sweep_dir
        self.pool = WorkerPool(parallel, warm_imports=("torch", "sweep.train"),
                               env={"SUBMITIT_EXECUTOR": "local"})
        self.tasks: list[Task] = []
        self.overrides_of: dict[str, list[str]] = {}
        self.worker_of: dict[str, str] = {}  # run -> the pid of the worker it started on
        self.cut: list[tuple[str, str]] | None = None  # set by close()

    def start(self, planned: list[PlannedRun], job: Any) -> None:
        import cloudpickle

        logs = ledger_dir(self.sweep_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for p in planned:
            flat = p.run.replace(os.sep, "%2F")
            payload = cloudpickle.dumps((job, (p.config, p.job_num, f"{p.job_num}")))
            self.tasks.append(Task(p.run, payload, logs / f"{flat}.out", logs / f"{flat}.err"))
            self.overrides_of[p.run] = p.overrides

    def _started(self, task: Task, pid: int) -> None:
        rel = lambda p: os.path.relpath(p, self.sweep_dir)  # noqa: E731
        append_submissions(self.sweep_dir, [Submission(
            run=task.key, job_id=str(pid), executor="local",
            submitted=datetime.now(timezone.utc).isoformat(timespec="seconds"), stdout=rel(task.stdout),
            stderr=rel(task.stderr), config=rel(config_snapshot_path(self.sweep_dir, task.key)),
            overrides=self.overrides_of[task.key])])
        self.worker_of[task.key] = str(pid)
        print(f"[sweep] started   {task.key}  (worker {pid})", flush=True)

    def ended(self) -> Iterator[PoolRun]:
        for finished in self.pool.run(self.tasks, self._started):
            yield PoolRun(finished)

    def close(self) -> list[tuple[str, str]]:
        """End every worker (once); returns the runs cut off, with their worker pids (the same each call)."""
        if self.cut is None:
            self.cut = [(run, self.worker_of.get(run, "")) for run in self.pool.close()]
        return self.cut


class SlurmArray:
    """The batch as one Slurm job array (`array_parallelism` bounds it); the jobs outlive this process."""

    def __init__(self, sweep_dir: Path, params: dict[str, Any]) -> None:
        self.sweep_dir, self.params = sweep_dir, params
        self.jobs: list[tuple[str, Any]] = []  # (run, submitit job)

    def submit(self, planned: list[PlannedRun], job: Any) -> list[str]:
        """Submit the array and record it in the ledger; returns the job ids."""
        import submitit
        from omegaconf import OmegaConf

        # one array per distinct set of resources: a job's `sweep.slurm` keys (a rung's GPUs, time, memory)
        # override the sweep's hydra.launcher keys (sweep/budget.py job_launcher)
        groups: dict[str, list[PlannedRun]] = {}
        for p in planned:
            node = OmegaConf.select(p.config, "sweep.slurm")
            own = OmegaConf.to_container(node, resolve=True) if node is not None else {}
            groups.setdefault(json.dumps(own, sort_keys=True), []).append(p)
        planned = [p for group in groups.values() for p in group]
        jobs = []
        for own, group in groups.items():
            params = {**self.params, **json.loads(own)}
            executor = make_executor(params, "slurm")
            try:
                # sbatch writes its rejection to the inherited stderr as well as into the exception; keep
                # it off the terminal so the user sees one line, and keep it in the error if it's not there.
                with captured_stderr() as sbatch_stderr:
                    jobs += executor.map_array(job, [p.config for p in group], [p.job_num for p in group])
            except submitit.core.utils.FailedJobError as err:
                said = str(err) if "error:" in str(err) else "".join(sbatch_stderr)
                raise SubmissionError(describe_rejection(params, said)) from None
            else:
                sys.stderr.write("".join(sbatch_stderr))
        self.jobs = [(p.run, j) for p, j in zip(planned, jobs, strict=True)]
        append_submissions(self.sweep_dir, [submission_record(self.sweep_dir, p.run, j, "slurm", p.overrides)
                                            for p, j in zip(planned, jobs, strict=True)])
        return [j.job_id for j in jobs]

    def ended(self) -> Iterator[SlurmRun]:
        """Each job once, as soon as it has a result pickle or a final scheduler state."""
        jobs = self.jobs
        finished: set[str] = set()
        last_scheduler_poll = 0.0
        while len(finished) < len(jobs):
            ask_scheduler = time.monotonic() - last_scheduler_poll >= _SCHEDULER_POLL_S
            if ask_scheduler:
                jobs[0][1].watcher.update()  # one sacct call for every job of this sweep
                last_scheduler_poll = time.monotonic()
            for run, j in jobs:
                if j.job_id in finished:
                    continue
                final_state = None
                if j.paths.result_pickle.exists():
                    final_state = "RESULT"
                elif ask_scheduler:
                    state = j.watcher.get_state(j.job_id, mode="cache")
                    if slurm_state_word(state) not in SLURM_UNFINISHED:
                        final_state = state
                if final_state is not None:
                    finished.add(j.job_id)
                    yield SlurmRun(run, j, final_state)
            if len(finished) < len(jobs):
                time.sleep(_POLL_S)
