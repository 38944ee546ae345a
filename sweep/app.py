"""The Hydra app (``python -m sweep``): compose the config, resolve the job's thread count, train.

Kept thin on purpose: the launcher pickles this module's task function and the job re-imports
``sweep.train`` by reference (hydra-submitit pitfall: heavy or unpicklable objects belong inside the job).
Requeue after preemption is the hydra-submitit launcher's own ``checkpoint()`` (it resubmits the same
arguments); the job finds its checkpoint in its output dir and resumes.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweep.config import ConfigError, default_threads

log = logging.getLogger("sweep")

# Resolvers must be registered at import, before @hydra.main runs, so they reach submitit jobs too.
OmegaConf.register_new_resolver("cpu_count", default_threads, replace=True)


def job_threads(hydra_cfg: Any) -> int:
    """CPU threads for this job: its share of the cores when several local jobs run at once."""
    cores = default_threads()
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        parallel = hydra_cfg.sweeper.get("max_batch_size") or cores
        return max(1, cores // int(parallel))
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        # Slurm without CPU pinning (task/none, as on the local test cluster) still shows every core;
        # the allocation is what the task may use.
        return max(1, min(cores, int(os.environ["SLURM_CPUS_PER_TASK"])))
    return cores  # single run, or a pinned Slurm task: its affinity mask is its allocation


def resolved_config(cfg: DictConfig, hydra_cfg: Any) -> dict[str, Any]:
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as err:  # MissingMandatoryValue, InterpolationResolutionError …
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
    if container["train"].get("threads") is None:
        container["train"]["threads"] = job_threads(hydra_cfg)
    return container


def write_failure(run_dir: Path, reason: str) -> None:
    from sweep.contract import SUMMARY, atomic_write_json

    atomic_write_json(run_dir / SUMMARY, {"status": "failed", "final_val_loss": None, "tokens_seen": 0,
                                          "wall_s": 0.0, "reason": reason, "steps": 0})


def run_job(cfg: DictConfig) -> dict[str, Any]:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    from sweep.train import EXIT_PREEMPTED, Preempted, train

    try:
        return train(resolved_config(cfg, hydra_cfg), run_dir)
    except ConfigError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        # in a sweep, one bad job must not abort the others: record it where `bitlaw status` looks
        if not (run_dir / "run.json").exists():
            write_failure(run_dir, f"config: {err}")
        return {"status": "failed", "reason": str(err)}
    except Preempted as stop:
        log.warning("%s; run the same command again to resume", stop)
        sys.exit(EXIT_PREEMPTED)
    except Exception as err:
        if not (run_dir / "summary.json").exists():
            write_failure(run_dir, f"{type(err).__name__}: {err}")
        raise


class SweepSummary(Callback):
    """After a multirun: one line of counts by status, and a non-zero exit if any run failed.

    A job that fails (bad config, an exception) records ``summary.json: failed`` and returns, so the other
    jobs of the sweep still run; this is where the sweep as a whole reports it.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from sweep.contract import SUMMARY, read_json

        sweep_dir = Path(config.hydra.sweep.dir)
        statuses: dict[str, int] = {}
        first_failure = None
        for summary_path in sorted(sweep_dir.glob(f"**/{SUMMARY}")):
            summary = read_json(summary_path) or {}
            status = summary.get("status", "unknown")
            statuses[status] = statuses.get(status, 0) + 1
            if status == "failed" and first_failure is None:
                first_failure = f"{summary_path.parent.name}: {summary.get('reason')}"
        counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        print(f"sweep {sweep_dir}: {counts or 'no finished runs'}", file=sys.stderr)
        if first_failure:
            print(f"sweep: error: {statuses['failed']} run(s) failed, e.g. {first_failure}", file=sys.stderr)
            sys.exit(1)


# An absolute path: with `python -m sweep` a relative config_path would be looked up as a Python module.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run_job(cfg)


if __name__ == "__main__":  # `python -m sweep.app`: what sweep.submit runs in-process for a multirun
    main()
