"""The launcher is a real Hydra plugin: discovered under an editable and a regular install, and the task
function is pickled by reference (so a job's traceback names real files)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest
from conftest import ROOT

LAUNCHERS = ("BitlawLocalLauncher", "BitlawSlurmLauncher")


def _info_plugins(cwd: Path, env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "sweep", "--info", "plugins"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_info_plugins_lists_the_launchers_from_outside_the_repo(tmp_path):
    # cwd outside the checkout: only the installed (here: editable) package can make Hydra find them
    listing = _info_plugins(tmp_path)
    for name in LAUNCHERS:
        assert f"\t\t{name}\n" in listing, listing
    assert "_BitlawLauncher" not in listing  # the abstract base is not offered


@pytest.mark.slow
def test_info_plugins_lists_the_launchers_under_a_regular_install(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert (target / "hydra_plugins" / "bitlaw_launcher" / "bitlaw_launcher.py").is_file()
    assert not (target / "hydra_plugins" / "__init__.py").exists()  # a namespace package, shared with others
    env = {**os.environ, "PYTHONPATH": str(target)}
    listing = _info_plugins(tmp_path, env)
    for name in LAUNCHERS:
        assert f"\t\t{name}\n" in listing, listing
    code = "import hydra_plugins.bitlaw_launcher as p; print(p.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr


def test_task_function_is_pickled_by_reference():
    from sweep.app import train_task

    payload = cloudpickle.dumps(train_task)
    assert b"sweep.app" in payload and b"train_task" in payload
    assert len(payload) < 200, len(payload)  # a reference, not the code object
    assert pickle.loads(payload) is train_task


def test_run_dir_names_leave_out_the_contracts_volatile_keys():
    from hydra import compose, initialize_config_dir

    import sweep.app  # noqa: F401  registers the resolvers
    from sweep.contract import is_volatile

    overrides = ["quant.bits=3", "train.lr=0.002", "logger.wandb.mode=disabled", "logger.wandb.project=x",
                 "train.threads=1", "+logger.extra=1", "sweep.name=n", "experiment=smoke"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    # compose does not fill override_dirname; the exclude list is what Hydra's loader applies
    excluded = list(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert set(excluded) == {"logger.wandb.mode", "logger.wandb.project", "train.threads", "logger.extra",
                             "sweep.name", "experiment"}
    assert all(is_volatile(k) for k in excluded if k != "experiment")
