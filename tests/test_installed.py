"""bitlaw works where it is installed: a wheel of this tree, installed into a bare directory and run from
another one, finds its configs (conf/ is package data of sweep, found by sweep.contract.conf_dir), runs the
CLI, composes an experiment, trains a tiny run, and records its version where there is no git checkout.

The venv's python runs everything (its site-packages give torch, Hydra, pandas); PYTHONPATH puts the
installed copy first, and every check asserts that the modules came from there, not from this checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what a build reads: the source tree, without the venv, results or earlier build output
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".lock-venv", "build", "dist", "*.egg-info", "results",
                                    "sweeps", "outputs", "multirun", "wandb", "__pycache__", ".*_cache")
# the version the wheel is built with (tomllib is not in Python 3.10, which pyproject admits)
VERSION = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
TINY_RUN = ["model=tiny", "train.tokens=20480", "train.batch_tokens=1024", "train.seq_len=64",
            "train.threads=1", "train.eval_every=8", "train.eval_tokens=2048", "train.final_eval_spacing=1",
            "data.max_bytes=2000000", "logger.wandb.mode=disabled", "quant.qat_start=10"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(the install directory, the environment that runs from it, a working directory outside both)."""
    tmp = tmp_path_factory.mktemp("installed")
    source, dist, site, elsewhere = tmp / "source", tmp / "dist", tmp / "site", tmp / "elsewhere"
    # a copy, so the build's build/ directory (which keeps deleted modules) never feeds the wheel
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("bitlaw-*.whl")
    install = subprocess.run([*pip, "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HYDRA"))}
    env["PYTHONPATH"] = str(site)
    return site, env, elsewhere


def run(installed: tuple[Path, dict[str, str], Path], *args: str, timeout: int = 300) -> str:
    _, env, elsewhere = installed
    out = subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{args}: {out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_the_installed_modules_and_configs_are_the_installed_copy(installed) -> None:
    site = installed[0]
    code = ("import json, bitlaw.cli, fit.answer.memory, hydra_plugins.bitlaw_launcher, sweep.app\n"
            "from sweep.contract import bitlaw_version, conf_dir\n"
            "print(json.dumps({'files': [m.__file__ for m in (bitlaw.cli, fit.answer.memory, sweep.app,\n"
            "    hydra_plugins.bitlaw_launcher)], 'conf': str(conf_dir()), 'version': bitlaw_version(),\n"
            "    'models': str(fit.answer.memory.conf_model_dir())}))")
    where = json.loads(run(installed, "-c", code))
    assert len(where["files"]) == 4 and all(f.startswith(str(site)) for f in where["files"]), where
    conf = Path(where["conf"])
    assert conf == site / "sweep" / "conf" and Path(where["models"]) == conf / "model"
    shipped = sorted(p.relative_to(conf) for p in conf.rglob("*.yaml"))
    assert shipped == sorted(p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml"))
    assert (conf / "grid" / "demo.yaml").is_file()  # verify plan drops the demo's axes with ~grid
    assert where["version"] == VERSION


@pytest.mark.slow
def test_the_installed_cli_answers_from_any_directory(installed) -> None:
    answer = json.loads(run(installed, "-m", "bitlaw", "recommend", "--arch", "bitlaw", "--preset",
                            "1bw-kmeans", "--memory", "1MB", "--json"))
    ladder = {path.stem for path in (ROOT / "conf" / "model").glob("*.yaml")}
    assert answer["arch"] == "bitlaw" and answer["best"]["shape"]["name"] in ladder, answer
    # a law needs 3 sizes and 3 token budgets; train.tokens is set on the composed configs, not recomposed
    grid = ["experiment=smoke", "model=r49k,base,r295k", "point=kmeans2,bf16", "train.tokens=1e5,2e5,4e5"]
    plan = json.loads(run(installed, "-m", "bitlaw", "plan", *grid, "--cost", "--json"))
    assert plan["grid"] == " ".join(grid) and plan["compute"]["runs"] == 18, plan
    helped = run(installed, "-m", "sweep", "--help")
    assert "experiment: cluster, demo" in helped and "point: bf16" in helped


@pytest.mark.slow
def test_the_installed_sweep_and_submit_train_and_record_the_version(installed) -> None:
    run_dir = installed[2] / "run"
    run(installed, "-m", "sweep", *TINY_RUN, f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and 0 < summary["final_val_loss"] < 6, summary
    assert json.loads((run_dir / "run.json").read_text())["bitlaw_version"] == VERSION
    # bitlaw.submit execs the installed app as a multirun: one point of experiment=smoke, locally
    sweep_dir = installed[2] / "sweep"
    run(installed, "-m", "bitlaw.submit", "experiment=smoke", "point=kmeans2", *TINY_RUN,
        f"hydra.sweep.dir={sweep_dir}")
    summaries = [json.loads(path.read_text()) for path in sweep_dir.rglob("summary.json")]
    assert [s["status"] for s in summaries] == ["completed"], summaries
