"""DDP across nodes: what a 2-node job gets from the composed Slurm config, and what each task makes of it."""

from __future__ import annotations

import shutil

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sweep import distributed
from sweep.app import CONF_DIR
from sweep.submission import make_executor

TWO_NODES = ["hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4",
             "hydra.launcher.gpus_per_node=4", "hydra.launcher.cpus_per_task=8", "experiment=cluster"]


def launcher_params(tmp_path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, f"hydra.sweep.dir={tmp_path}"],
                      return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


@pytest.mark.slurm  # submitit's Slurm executor refuses to exist without srun on PATH
@pytest.mark.skipif(shutil.which("srun") is None, reason="Slurm is not installed (no srun on PATH)")
def test_a_two_node_job_asks_slurm_for_nodes_times_tasks_with_a_gpu_each(tmp_path) -> None:
    params = launcher_params(tmp_path, *TWO_NODES)
    for key in ("detach", "pool", "parallel"):  # the launcher's own keys, popped before the executor
        params.pop(key, None)
    executor = make_executor(params, "slurm")
    script = executor._executor._make_submission_file_text("python -m sweep", "uid")  # the sbatch file
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8"):
        assert line in script, line
    # srun starts one process per task on every node: 8 ranks in all
    assert "srun" in script


@pytest.mark.parametrize("procid,localid", [(0, 0), (5, 1), (7, 3)])
def test_each_task_of_a_two_node_job_finds_its_rank_gpu_and_the_first_node(monkeypatch, procid, localid):
    env = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_NNODES": "2",
           "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(localid), "SLURM_NODEID": str(procid // 4),
           "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_STEP_NODELIST": "gpu[07-08]",
           "SLURM_JOB_NUM_NODES": "2", "SLURM_TASKS_PER_NODE": "4(x2)"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    info, master, port = distributed._from_submitit()
    assert (info.rank, info.world_size, info.local_rank) == (procid, 8, localid)
    assert master == "gpu07"  # every task, on either node, meets at the first node
    assert 20000 <= port < 40000
    assert distributed.backend_for("cuda") == "nccl" and distributed.backend_for("cpu") == "gloo"
