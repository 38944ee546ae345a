"""The launcher classes and their config schemas, registered as `hydra/launcher=bitlaw_local|bitlaw_slurm`.

Hydra imports this module while scanning for plugins (for every Hydra app in the environment), so it imports
only Hydra and the stock launcher's config dataclasses; submitit and sweep/ are imported when a sweep
launches.
"""

# No `from __future__ import annotations`: OmegaConf reads these dataclasses' annotations as real types, and
# Hydra's plugin scan loads this module in a way that string annotations cannot be resolved from.
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from omegaconf import DictConfig, OmegaConf


@dataclass
class BitlawLocalConf(LocalQueueConf):
    """submitit_local's keys, plus the worker pool's width and the (refused) detach switch.

    Local runs always go to the worker pool (sweep/pool.py). `pool` is the retired switch for a process per
    run: kept in the schema only so that setting it says so in one line (sweep/launcher.py POOL_REMOVED)."""

    _target_: str = "hydra_plugins.bitlaw_launcher.bitlaw_launcher.BitlawLocalLauncher"
    # noqa: UP045 below: OmegaConf 2.3 needs typing.Optional
    parallel: Optional[int] = None  # noqa: UP045  # runs at once (workers); null = the number of cores
    detach: bool = False  # only Slurm jobs outlive the submitting process: true is refused here
    pool: Optional[bool] = None  # noqa: UP045  # retired: any value is an error naming the change


@dataclass
class BitlawSlurmConf(SlurmQueueConf):
    """submitit_slurm's keys, plus `detach`: submit, record the job ids, and return."""

    _target_: str = "hydra_plugins.bitlaw_launcher.bitlaw_launcher.BitlawSlurmLauncher"
    detach: bool = False


ConfigStore.instance().store(group="hydra/launcher", name="bitlaw_local", node=BitlawLocalConf,
                             provider="bitlaw")
ConfigStore.instance().store(group="hydra/launcher", name="bitlaw_slurm", node=BitlawSlurmConf,
                             provider="bitlaw")


class _BitlawLauncher(Launcher):
    """Frozen configs, idempotent re-sweeps, an outcome per run, detach (see sweep/launcher.py)."""

    @property
    @abstractmethod
    def cluster(self) -> str:
        """submitit's executor name: local | slurm (abstract, so Hydra lists only the two launchers)."""

    def __init__(self, **params: Any) -> None:
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}
        self.config: Optional[DictConfig] = None  # noqa: UP045
        self.hydra_context: Optional[HydraContext] = None  # noqa: UP045
        self.task_function: Optional[TaskFunction] = None  # noqa: UP045

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from sweep.launcher import SweepLauncher
        from sweep.submission import report_and_exit_on_user_error

        assert self.config is not None and self.hydra_context is not None
        with report_and_exit_on_user_error():
            sweep = SweepLauncher(self.cluster, self.params, self.config, self.hydra_context,
                                  self.task_function)
            return sweep.launch(job_overrides, initial_job_idx)


class BitlawLocalLauncher(_BitlawLauncher):
    cluster = "local"  # type: ignore[assignment]


class BitlawSlurmLauncher(_BitlawLauncher):
    cluster = "slurm"  # type: ignore[assignment]
