"""Launching on the real local Slurm cluster: failures, cancellation, rejection, re-sweeps, detach, snapshots.

The payload is tests/slurm_app, a stand-in for the QAT job that writes the same run-dir files without
torch, so each sweep takes seconds; tests/test_slurm_train.py runs the real training job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from sweep.status import sweep_status

slurm = pytest.mark.slurm


def submit_cmd(sweep: Path, *overrides: str, detach: bool = False, launcher: str = "slurm") -> list[str]:
    return [sys.executable, "-m", "bitlaw.submit", *(["--detach"] if detach else []), "--app",
            "tests.slurm_app", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", *overrides]


def submit(sweep: Path, *overrides: str, detach: bool = False, env: dict | None = None,
           launcher: str = "slurm", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(submit_cmd(sweep, *overrides, detach=detach, launcher=launcher), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def ledger_lines(sweep: Path) -> list[dict]:
    path = sweep / ".bitlaw" / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def states(sweep: Path) -> dict[str, str]:
    return {s.run: s.state for s in sweep_status(sweep)}


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


@slurm
def test_slurm_up_is_a_quick_no_op_when_the_cluster_is_up(slurm_cluster):
    if os.geteuid() != 0:
        pytest.skip("scripts/slurm-up.sh needs root")
    started = time.monotonic()
    result = subprocess.run(["bash", str(ROOT / "scripts" / "slurm-up.sh")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "starting" not in result.stdout and "installing" not in result.stdout, result.stdout
    assert "cluster ready" in result.stdout and f"partition={slurm_cluster}" in result.stdout
    print(f"slurm-up.sh no-op: {time.monotonic() - started:.2f} s")


@slurm
def test_failed_run_is_recorded_then_resweep_reruns_it_and_skips_completed(slurm_cluster, tmp_path):
    sweep, markers, conf = tmp_path / "sweep", tmp_path / "markers", tmp_path / "conf"
    markers.mkdir()
    (markers / "fail-2").touch()
    shutil.copytree(ROOT / "tests" / "slurm_app" / "conf", conf)
    grid = ("--config-path", str(conf), "value=1,2", f"fail_marker={markers}")

    first = submit(sweep, *grid)
    assert first.returncode == 1, first.stderr  # a failed run makes the sweep exit non-zero
    assert "done      value=1" in first.stdout and "failed    value=2" in first.stdout
    summary = json.loads((sweep / "value=2" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["reason"] == "RuntimeError: deliberate failure for value=2"
    assert "Traceback" in summary["traceback_tail"] and "slurm_app" in summary["traceback_tail"]
    failed = next(s for s in sweep_status(sweep) if s.run == "value=2")
    assert failed.state == "failed" and "deliberate failure" in failed.detail and "log:" in failed.detail

    (markers / "fail-2").unlink()
    second = submit(sweep, *grid)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "[sweep] skip value=1: completed" in second.stdout
    assert "done      value=2" in second.stdout
    assert [r["run"] for r in ledger_lines(sweep)].count("value=1") == 1  # never submitted again
    assert [r["run"] for r in ledger_lines(sweep)].count("value=2") == 2

    third = submit(sweep, *grid)
    assert third.returncode == 0 and "2 run(s): 2 skipped" in third.stdout
    assert len(ledger_lines(sweep)) == 3
    assert states(sweep) == {"value=1": "done", "value=2": "done"}

    # conf/ edited: same run dirs, different experiments (run_id). Completed results are never overwritten.
    edited = (conf / "config.yaml").read_text().replace("offset: 0.0", "offset: 1.0")
    (conf / "config.yaml").write_text(edited)
    fourth = submit(sweep, *grid)
    assert fourth.returncode == 1 and fourth.stdout.count("its run.json holds run_id") == 2, fourth.stdout
    assert len(ledger_lines(sweep)) == 3
    assert json.loads((sweep / "value=1" / "summary.json").read_text())["final_val_loss"] == 0.5


@slurm
def test_cancelled_job_ends_the_sweep_with_the_run_marked_cancelled(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(submit_cmd(sweep, "value=7", "sleep_s=300"), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: ledger_lines(sweep) and states(sweep).get("value=7") == "running", 60,
                 "the job to start")
        subprocess.run(["scancel", ledger_lines(sweep)[0]["job_id"]], check=True)
        out, err = proc.communicate(timeout=60)  # no hang: ends soon after the cancel
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 1, err
    assert "cancelled value=7" in out
    assert states(sweep) == {"value=7": "cancelled"}


@slurm
@pytest.mark.parametrize("request_, said", [
    ("hydra.launcher.cpus_per_task=64", "More processors requested than permitted"),
    ("hydra.launcher.mem_gb=100000", "Memory specification can not be satisfied"),
])
def test_request_that_can_never_fit_is_a_one_line_error(slurm_cluster, tmp_path, request_, said):
    sweep = tmp_path / "sweep"
    result = submit(sweep, "value=1", request_)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert request_.split(".")[-1] in lines[0] and said in lines[0]
    assert ledger_lines(sweep) == []  # nothing was queued


@slurm
def test_slurm_not_running_is_a_one_line_error_naming_the_start_script(slurm_cluster, tmp_path):
    # The client's view of a stopped controller: a slurm.conf whose controller port nobody listens on.
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    dead = tmp_path / "slurm.conf"
    dead.write_text(conf + "\nSlurmctldPort=9\nMessageTimeout=2\n")
    result = submit(tmp_path / "sweep", "value=1", env={**os.environ, "SLURM_CONF": str(dead)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "scripts/slurm-up.sh" in result.stderr, result.stderr
    assert "controller is not running" in result.stderr

    no_slurm = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    result = submit(tmp_path / "sweep", "value=1", env=no_slurm)
    assert result.returncode == 2 and "not installed" in result.stderr and "slurm-up.sh" in result.stderr


@slurm
def test_detached_sweep_runs_from_frozen_configs_and_status_follows_it(slurm_cluster, tmp_path):
    conf = tmp_path / "conf"  # a copy of the conf tree, edited after submission
    shutil.copytree(ROOT / "tests" / "slurm_app" / "conf", conf)
    sweep = tmp_path / "sweep"
    grid = ("--config-path", str(conf), "value=1,2", "sleep_s=4", "hydra.launcher.array_parallelism=1")

    started = time.monotonic()
    result = submit(sweep, *grid, detach=True)
    assert result.returncode == 0, result.stderr
    assert f"bitlaw status {sweep}" in result.stdout
    # array_parallelism=1: the second run cannot start before the first has slept 4 s, so the command
    # returning first shows that nothing waited for the jobs.
    now = states(sweep)
    assert set(now.values()) <= {"pending", "running"} and "pending" in now.values(), now
    edited_at = time.time()
    config_text = (conf / "config.yaml").read_text()
    (conf / "config.yaml").write_text(config_text.replace("offset: 0.0", "offset: 100.0"))

    again = submit(sweep, *grid, detach=True)  # re-running while queued must not duplicate jobs
    assert again.stdout.count("already in Slurm as job") == 2, again.stdout
    assert len(ledger_lines(sweep)) == 2

    wait_for(lambda: set(states(sweep).values()) == {"done"}, 90, "both runs to finish")
    assert time.monotonic() - started > 8  # the runs took longer than the submit command
    second = json.loads((sweep / "value=2" / "run.json").read_text())
    assert second["started"] > edited_at  # it started after conf was edited ...
    loss = json.loads((sweep / "value=2" / "summary.json").read_text())["final_val_loss"]
    assert loss == pytest.approx(1 / 3)  # ... and still ran the config as it was at submission
    assert "offset: 0.0" in (sweep / ".bitlaw" / "configs" / "value=2.yaml").read_text()

    cli = subprocess.run([sys.executable, "-m", "bitlaw", "status", str(sweep)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and cli.stdout.strip().endswith("2 runs: 2 done"), cli.stdout


@pytest.mark.integration
def test_local_launcher_runs_skips_and_refuses_detach(tmp_path):
    sweep = tmp_path / "sweep"
    first = submit(sweep, "value=1,2", launcher="local")
    assert first.returncode == 0 and "2 run(s): 2 done" in first.stdout, first.stdout + first.stderr
    assert [r["executor"] for r in ledger_lines(sweep)] == ["local", "local"]
    again = submit(sweep, "value=1,2", launcher="local")
    assert again.returncode == 0 and "2 run(s): 2 skipped" in again.stdout
    detached = submit(sweep, "value=3", launcher="local", detach=True)
    assert detached.returncode == 2 and detached.stderr.count("\n") == 1
    assert "--detach needs hydra/launcher=slurm" in detached.stderr
    typo = submit(sweep, "valeu=3", launcher="local")
    assert typo.returncode == 2 and typo.stderr.count("\n") == 1 and "'valeu'" in typo.stderr, typo.stderr
