"""The callable each submitit task runs: Hydra's `run_job` on a config composed at submission time.

hydra-submitit-launcher pickles the launcher itself and re-composes the config from conf/ when the job
starts (so edits to conf/ reach queued jobs). bitlaw's launcher (sweep/launcher.py) pickles a `ComposedJob`
and passes each job its already-composed config instead: what was submitted is what runs, requeues included.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from sweep.contract import SUMMARY, Summary, SummaryStatus, read_json, write_summary

_TRACEBACK_LINES = 12  # traceback lines kept in a failed run's summary.json


class ComposedJob:
    """What each submitit task runs: Hydra's `run_job` on a config composed at submission time.

    Pickled once per array task. `checkpoint` makes the task requeueable: on submitit's timeout or
    preemption signal the same config is requeued and the training code resumes from its own checkpoint.
    """

    def __init__(self, hydra_context: Any, task_function: Any, singleton_state: dict) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.singleton_state = singleton_state

    def __call__(self, config: Any, job_num: int, job_id: str | None = None) -> Any:
        """Run one job; `job_id` is given by the local worker pool (sweep/pool.py), else submitit's."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobStatus, run_job, setup_globals
        from omegaconf import open_dict, read_write

        # Restores resolvers and Hydra's runtime state exactly as the submitting process had them.
        Singleton.set_state(self.singleton_state)
        setup_globals()
        with read_write(config.hydra.job), open_dict(config.hydra.job):
            config.hydra.job.id = job_id if job_id is not None else submitit.JobEnvironment().job_id
            config.hydra.job.num = job_num
        job_return = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                             config=config, job_dir_key="hydra.sweep.dir",
                             job_subdir_key="hydra.sweep.subdir")
        if job_return.status == JobStatus.FAILED:
            # Hydra caught the task's exception. Record it in the run dir (unless the task already wrote
            # its own failed summary) and re-raise, so Slurm and submitit also see the job as failed.
            error = job_return._return_value
            _record_failure(Path(str(config.hydra.runtime.output_dir)), error)
            raise error
        return job_return

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _record_failure(run_dir: Path, error: BaseException) -> None:
    """Make summary.json say failed, with the exception as reason and the traceback's last lines.

    A failed summary the task wrote itself keeps its fields (its reason wins); only the traceback is added.
    """
    existing = read_json(run_dir / SUMMARY) or {}
    if existing.get("status") == SummaryStatus.FAILED:
        summary = Summary.from_json(existing)
    else:
        summary = Summary(SummaryStatus.FAILED, f"{type(error).__name__}: {error}")
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__)).strip()
    summary.traceback_tail = "\n".join(trace.splitlines()[-_TRACEBACK_LINES:])
    write_summary(run_dir, summary)
