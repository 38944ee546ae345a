"""`bitlaw status`: run dirs + the submission ledger + Slurm's answers -> one state per run.

Slurm's answers come from `squeue`/`sacct` stand-ins on PATH, so every state is covered without a
cluster; tests/test_slurm.py checks the same command against the real one.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from bitlaw.cli import main as bitlaw
from sweep.status import sweep_status


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def record(sweep: Path, run: str, job_id: str, executor: str = "slurm") -> None:
    ledger = sweep / ".bitlaw" / "jobs.jsonl"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    logs = f".submitit/{job_id}/{job_id}_0_log"
    line = {"run": run, "job_id": job_id, "executor": executor, "submitted": "2026-01-01T00:00:00+00:00",
            "stdout": f"{logs}.out", "stderr": f"{logs}.err", "config": f".bitlaw/configs/{run}.yaml",
            "overrides": [run]}
    with open(ledger, "a") as f:
        f.write(json.dumps(line) + "\n")


def log(sweep: Path, job_id: str, text: str) -> None:
    path = sweep / ".submitit" / job_id / f"{job_id}_0_log.err"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """squeue/sacct stand-ins that answer from fixed tables and log their arguments to calls.txt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    answers = {
        "squeue": "7_0|PENDING\n7_1|RUNNING\n9|COMPLETING\n",
        "sacct": "8|CANCELLED by 0\n9|FAILED\n10|COMPLETED\n",
    }
    for name, answer in answers.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho \"{name} $*\" >> {calls}\nprintf '{answer}'\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def make_sweep(sweep: Path) -> None:
    write_json(sweep / "a=done" / "run.json", {"run_id": "r1"})
    write_json(sweep / "a=done" / "summary.json", {"status": "completed", "final_val_loss": 2.5})
    record(sweep, "a=done", "6")
    write_json(sweep / "a=diverged" / "summary.json", {"status": "diverged", "reason": "loss 9.1 > 8.3"})
    record(sweep, "a=diverged", "5")
    log(sweep, "5", "step 10\nstep 20\nloss exploded\n")
    record(sweep, "a=pending", "7_0")         # no run dir yet: the job has not started
    write_json(sweep / "a=running" / "run.json", {"run_id": "r4"})
    record(sweep, "a=running", "7_1")
    record(sweep, "a=cancelled", "8")
    write_json(sweep / "a=crashed" / "run.json", {"run_id": "r6"})
    record(sweep, "a=crashed", "9")           # squeue: COMPLETING -> sacct decides: FAILED
    log(sweep, "9", "Traceback\n  File x\nMemoryError: out of memory\n")
    write_json(sweep / "a=nosummary" / "run.json", {"run_id": "r7"})
    record(sweep, "a=nosummary", "10")        # Slurm says COMPLETED but the job wrote no summary
    write_json(sweep / "a=orphan" / "run.json", {"run_id": "r8"})  # interrupted local run, no ledger


def test_every_state_is_derived_from_run_dirs_ledger_and_slurm(tmp_path, fake_slurm):
    sweep = tmp_path / "sweep"
    make_sweep(sweep)
    got = {s.run: s for s in sweep_status(sweep)}
    assert {run: s.state for run, s in got.items()} == {
        "a=done": "done", "a=diverged": "failed", "a=pending": "pending", "a=running": "running",
        "a=cancelled": "cancelled", "a=crashed": "failed", "a=nosummary": "failed", "a=orphan": "unknown"}
    assert "2.5" in got["a=done"].detail
    assert "diverged: loss 9.1 > 8.3" in got["a=diverged"].detail
    assert "loss exploded" in got["a=diverged"].detail  # the log's last lines
    assert "FAILED" in got["a=crashed"].detail and "MemoryError: out of memory" in got["a=crashed"].detail
    assert got["a=pending"].job_id == "7_0" and got["a=running"].slurm_state == "RUNNING"
    calls = fake_slurm.read_text()
    assert "squeue -h -r" in calls  # one line per array task, so 7_0 / 7_1 match the ledger
    assert "sacct" in calls and "6" not in calls.split("sacct", 1)[1]  # finished runs are not queried


def test_last_submission_of_a_run_wins(tmp_path, fake_slurm):
    sweep = tmp_path / "sweep"
    record(sweep, "a=1", "8")     # cancelled the first time ...
    record(sweep, "a=1", "7_0")   # ... re-submitted, now pending
    assert [(s.run, s.state, s.job_id) for s in sweep_status(sweep)] == [("a=1", "pending", "7_0")]


def test_local_jobs_use_the_process_table_and_no_slurm(tmp_path, fake_slurm):
    sweep = tmp_path / "sweep"
    record(sweep, "a=live", str(os.getpid()), executor="local")
    record(sweep, "a=gone", "999999999", executor="local")
    assert {s.run: s.state for s in sweep_status(sweep)} == {"a=live": "running", "a=gone": "unknown"}
    assert not fake_slurm.exists()


def test_cli_prints_a_line_per_run_and_totals(tmp_path, fake_slurm, capsys):
    sweep = tmp_path / "sweep"
    make_sweep(sweep)
    assert bitlaw(["status", str(sweep)]) == 1  # it has failed and cancelled runs
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 9
    assert lines[-1] == "8 runs: 1 done, 1 running, 1 pending, 3 failed, 1 cancelled, 1 unknown"
    assert any(line.startswith("pending   a=pending") and "[7_0]" in line for line in lines)

    assert bitlaw(["status", str(sweep), "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["totals"]["failed"] == 3 and len(payload["runs"]) == 8


def test_cli_without_slurm_queries_reports_unknown(tmp_path, fake_slurm, capsys):
    sweep = tmp_path / "sweep"
    make_sweep(sweep)
    assert bitlaw(["status", str(sweep), "--no-slurm", "--json"]) == 1
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["done"] == 1 and totals["failed"] == 1 and totals["unknown"] == 6
    assert not fake_slurm.exists()


def test_missing_sweep_dir_is_a_one_line_error(tmp_path, capsys):
    assert bitlaw(["status", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SWEEP_DIR" in err and "not a directory" in err


def test_empty_sweep_dir_says_so(tmp_path, capsys):
    assert bitlaw(["status", str(tmp_path)]) == 0
    assert "no runs yet" in capsys.readouterr().out


def test_runs_without_a_ledger_use_the_slurm_id_in_run_json(tmp_path, fake_slurm):
    # e.g. launched with plain `python -m sweep -m hydra/launcher=slurm`: no .bitlaw/jobs.jsonl
    sweep = tmp_path / "sweep"
    write_json(sweep / "a=1" / "run.json", {"run_id": "r1", "slurm_job_id": "8"})
    write_json(sweep / "a=2" / "run.json", {"run_id": "r2", "slurm_job_id": "7_1"})
    got = {s.run: (s.state, s.job_id) for s in sweep_status(sweep)}
    assert got == {"a=1": ("cancelled", "8"), "a=2": ("running", "7_1")}


def test_a_finished_single_run_dir_is_its_own_run_and_a_clean_sweep_exits_0(tmp_path, capsys):
    write_json(tmp_path / "run.json", {"run_id": "r1"})
    write_json(tmp_path / "summary.json", {"status": "completed", "final_val_loss": 3.2})
    assert bitlaw(["status", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("done") and "final_val_loss 3.2" in lines[0] and lines[-1] == "1 runs: 1 done"
    write_json(tmp_path / "summary.json", {"status": "failed", "reason": "boom"})
    assert bitlaw(["status", str(tmp_path)]) == 1
    assert "failed: boom" in capsys.readouterr().out


def test_a_run_dir_held_by_a_live_job_is_running_without_a_ledger(tmp_path):
    from sweep.contract import hold_run_dir

    write_json(tmp_path / "sweep" / "a=1" / "run.json", {"run_id": "r1"})
    with hold_run_dir(tmp_path / "sweep" / "a=1"):
        [held] = sweep_status(tmp_path / "sweep", query_slurm=False)
        assert held.state == "running" and f"pid {os.getpid()}" in held.detail
    assert sweep_status(tmp_path / "sweep", query_slurm=False)[0].state == "unknown"
