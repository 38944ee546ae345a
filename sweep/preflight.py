"""Checks against this host before anything is queued or trained: the user's token file read through, the
W&B key an online run needs, and the output dirs Hydra is about to create.

sweep/config.py checks a job's values (and its token file's size, cheaply, in every job); these look further
(a pass over the token file, the environment, the file system), once, where the user is: at submission for
every job of a grid (sweep.submission.validate_job), and for a single run in the Hydra callback `Preflight`
(conf/config.yaml hydra.callbacks), which runs before Hydra makes the run dir, so a refused run leaves none.
Each problem is one line naming the key to change; exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback

if TYPE_CHECKING:  # sweep.config imports torch: imported where a job is checked, not at plugin scan
    from sweep.config import JobConfig


def check_inputs(job: JobConfig, local: bool) -> None:
    """Raise ConfigError for a token file whose ids do not fit the model or its dtype, or an online W&B run
    without a key. `local`: the job runs on this host's file system; else (Slurm) the token file is checked
    only when this host sees it at the same path (a login node shares the cluster's file system)."""
    from sweep.config import ConfigError
    from sweep.data import token_file_problem, token_id_problem
    from sweep.wandb_logger import MISSING_KEY, api_key_source

    d = job.data
    if d.corpus == "tokens" and (local or Path(str(d.path)).exists()):
        problem = token_file_problem(d, job.train.seq_len) or token_id_problem(d, job.model.vocab_size)
        if problem:
            raise ConfigError(problem)
    if job.wandb.mode == "online" and api_key_source() is None:
        raise ConfigError(MISSING_KEY)


def check_budget(task: dict, launcher: dict | None, name: str) -> None:
    """Raise ConfigError when the job cannot fit its GPU or finish in its Slurm time (sweep/budget.py), naming
    the fix; the job's `sweep.preflight.force=true` submits it anyway."""
    from sweep import budget
    from sweep.config import ConfigError

    knobs = budget.settings(task)
    if knobs.force:
        return
    res = budget.resources(budget.job_launcher(launcher, task))
    line = budget.refusal([budget.job_budget(name, task, res, knobs.gpu_memory, knobs.mfu, knobs.peak_flops)])
    if line:
        raise ConfigError(f"{line}; or sweep.preflight.force=true to submit it anyway")


def output_dir_problem(path: Path, key: str) -> str | None:
    """Why `path` cannot be made a writable directory, as one line naming `key`; None if it can.

    Tried, not predicted: os.access says yes to root on /proc or a read-only bind mount. Hydra creates the
    dir next anyway; a probe file is written and removed."""
    import tempfile

    path = path.absolute()
    way_out = f"choose another {key}=PATH"
    if path.exists() and not path.is_dir():
        return f"{key}: {path} is a file, not a directory; {way_out}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        where = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
        return f"{key}: cannot write {path}: {err.strerror or err}{where}; {way_out}"
    return None


def _output_dir(config: Any, key: str) -> Path | None:
    """The resolved `key` of the composed config, or None when it does not resolve here (Hydra reports it).
    Resolving here caches ${now:} in the config, so Hydra then makes this very dir."""
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.select(config, key, throw_on_missing=True)
    except Exception:  # noqa: BLE001
        return None
    return Path(str(value)) if value is not None else None


def _refuse(line: str) -> None:
    # Hydra's callbacks turn an Exception into a warning and go on: a user error must end the process here
    print(f"sweep: error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class Preflight(Callback):
    """Hydra callback: the output dir before Hydra creates it, and for a single run the job's config and
    inputs, so that a run that cannot succeed stops with one line and leaves no run dir behind."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._check_job(config)  # first: the dir check creates the dir
        run_dir = _output_dir(config, "hydra.run.dir")
        problem = output_dir_problem(run_dir, "hydra.run.dir") if run_dir is not None else None
        if problem:
            _refuse(problem)

    def _check_job(self, config: Any) -> None:
        from sweep.slurm import SubmissionError
        from sweep.submission import task_config

        try:
            task = task_config(config)
        except SubmissionError as err:  # a ??? value: the job would refuse it in the same words
            _refuse(str(err))
        if task is None or not {"model", "quant", "train"} <= set(task):
            return  # resolves only in the job, or not bitlaw's training job: the job checks itself
        from sweep.config import ConfigError, from_dict

        try:
            check_inputs(from_dict(task), local=True)
        except ConfigError as err:
            _refuse(str(err))

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = _output_dir(config, "hydra.sweep.dir")
        problem = output_dir_problem(sweep_dir, "hydra.sweep.dir") if sweep_dir is not None else None
        if problem:
            _refuse(problem)
