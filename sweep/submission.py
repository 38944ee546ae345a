"""Submitting a sweep's jobs: composing and checking each job's config, building submitit's executor from
the `hydra.launcher` keys, the ledger record of a submitted job, and one-line errors for what the user must
change (sweep/launcher.py uses these).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sweep.contract import SUMMARY, Submission, SummaryStatus, config_snapshot_path, read_json
from sweep.slurm import SubmissionError, sbatch_error_line


def task_config(config: Any) -> dict | None:
    """What run_job hands the task: the config without its `hydra` node, resolved; None if an interpolation
    only the job can resolve (an environment variable of the cluster, say) stops it here.
    A mandatory value left unset (???) is a SubmissionError: no job could run."""
    import copy

    from omegaconf import OmegaConf, open_dict, read_write
    from omegaconf.errors import MissingMandatoryValue

    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    try:
        return OmegaConf.to_container(task, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise SubmissionError(f"{err.full_key}: a mandatory value is not set (???); set it with "
                              f"{err.full_key}=VALUE") from None
    except Exception:  # the job resolves it and checks the config and its run_id itself
        return None


def expected_run_id(task: dict | None) -> str | None:
    """The run_id the job will compute for this config (the contract), or None if it cannot resolve here."""
    from sweep.contract import compute_run_id

    return compute_run_id(task) if task is not None else None


def validate_job(task: dict | None, overrides: Sequence[str], cluster: str,
                 launcher: dict | None = None) -> None:
    """The job's own config checks (sweep/config.py) and its inputs (sweep/preflight.py: the token file read
    through, the W&B key; on Slurm, its GPU memory and time against `launcher`, sweep/budget.py), run at
    submission so that a bad job of a grid stops the whole submission with one line before anything is
    queued, instead of failing once it runs."""
    if task is None or not {"model", "quant", "train"} <= set(task):
        return  # not bitlaw's training job (another Hydra app on this launcher): its job checks itself
    # imported only here: sweep.config's dataclasses import torch (~2 s), once per sweep
    from sweep.config import ConfigError, from_dict
    from sweep.preflight import check_budget, check_inputs
    try:
        # a Slurm job's token file lives on the cluster's file system, which this host may not see
        local = cluster != "slurm"
        check_inputs(from_dict(task, check_paths=local), local)
        if not local:
            check_budget(task, launcher, " ".join(overrides) or "(no overrides)")
    except ConfigError as err:
        job = " ".join(overrides) or "(no overrides)"
        raise SubmissionError(f"{err} (job: {job}); nothing was submitted") from None


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 (inherited by subprocesses such as sbatch) to a temp file meanwhile;
    the yielded list receives the captured text when the block ends."""
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def submission_record(sweep_dir: Path, run: str, job: Any, cluster: str, overrides: list[str]) -> Submission:
    """The ledger line `bitlaw status` reads for one submitted job (paths relative to the sweep dir)."""
    rel = lambda p: os.path.relpath(p, sweep_dir)  # noqa: E731
    return Submission(run=run, job_id=job.job_id, executor=cluster,
                      submitted=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      stdout=rel(job.paths.stdout), stderr=rel(job.paths.stderr),
                      config=rel(config_snapshot_path(sweep_dir, run)), overrides=overrides)


def describe_rejection(params: dict, message: str) -> str:
    asked = ", ".join(f"{k}={params[k]}" for k in ("partition", "nodes", "tasks_per_node", "cpus_per_task",
                                                   "gpus_per_node", "mem_gb", "timeout_min")
                      if params.get(k) is not None)
    return (f"hydra.launcher: Slurm rejected the request ({asked}): {sbatch_error_line(message)}; "
            "lower it to what a node offers (see `sinfo -o '%P %c %m %G %l'`)")


def make_executor(params: dict[str, Any], cluster: str) -> Any:
    """The executor hydra-submitit-launcher would build from the same `hydra.launcher` keys."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params = dict(params)
    folder = params.pop("submitit_folder")
    init = {f"{cluster}_{k}": params.pop(k) for k in ["max_num_timeout"] if k in params}
    params.pop("_target_", None)
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **init)
    # Keys shared by all executors go unprefixed; everything else (partition, account, qos, setup,
    # signal_delay_s, additional_parameters, site keys added with `+hydra.launcher.KEY=`) is slurm_KEY.
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"{cluster}_{k}": v for k, v in params.items()})
    return executor


@contextlib.contextmanager
def report_and_exit_on_user_error() -> Iterator[None]:
    """A SubmissionError (the user must change something) becomes one line on stderr and exit status 2,
    instead of Hydra's multi-line error report."""
    try:
        yield
    except SubmissionError as err:
        print(f"sweep: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def completed_summary(run_dir: Path) -> dict | None:
    summary = read_json(run_dir / SUMMARY)
    return summary if summary and summary.get("status") == SummaryStatus.COMPLETED else None
