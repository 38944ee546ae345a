"""The real QAT job (`python -m sweep`) on the local Slurm cluster: requeue after a time limit, and DDP.

Both tests run two sweeps side by side (one CPU each where possible) and compare their final losses.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
# The smallest rung, one thread per task so that runs on one and two tasks do the same arithmetic.
TRAIN = ("model=tiny", "train.threads=1", "logger.wandb.mode=disabled")


def submit_detached(sweep: Path, *overrides: str) -> dict:
    """Submit a one-run sweep and return its ledger record (job id, log paths)."""
    result = subprocess.run([sys.executable, "-m", "bitlaw.submit", "--detach", "hydra/launcher=slurm",
                             f"hydra.sweep.dir={sweep}", *overrides], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    [record] = [json.loads(line) for line in (sweep / ".bitlaw" / "jobs.jsonl").read_text().splitlines()]
    return record


def summary(sweep: Path, record: dict) -> dict | None:
    path = sweep / record["run"] / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def release_requeued(job_id: str, held_since: dict[str, float]) -> None:
    """Slurm holds a requeued job for ~2 minutes (Reason=BeginTime); let it start now, as an idle
    cluster eventually would, to keep the test short. Not at once: released within ~20 ms of the requeue,
    the job was started while its old credential was still being revoked and Slurm killed it ("Killing
    non-startable batch JobId=8: Job credential revoked", then FAILED); a few seconds' hold avoids that."""
    out = subprocess.run(["squeue", "-h", "-o", "%r", "-j", job_id], capture_output=True, text=True)
    if out.stdout.strip() != "BeginTime":
        held_since.pop(job_id, None)
        return
    if time.monotonic() - held_since.setdefault(job_id, time.monotonic()) >= 3:
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=False)


def job_state(job_id: str) -> str:
    """The job's Slurm state ("" when Slurm no longer knows it)."""
    out = subprocess.run(["squeue", "-h", "-o", "%T", "-j", job_id], capture_output=True, text=True)
    if out.stdout.strip():
        return out.stdout.strip()
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id], capture_output=True,
                         text=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def wait_for_summaries(runs: list[tuple[Path, dict]], timeout_s: float) -> list[dict]:
    """Wait for every run's summary.json. Fails at once, with the job's state and log, when a job has left
    the queue without one (a job Slurm killed would otherwise be waited on until the deadline)."""
    deadline = time.monotonic() + timeout_s
    held_since: dict[str, float] = {}
    gone_since: dict[str, float] = {}
    while True:
        found = [summary(sweep, record) for sweep, record in runs]
        if all(found):
            return found
        for (sweep, record), got in zip(runs, found, strict=True):
            if got is None and job_state(record["job_id"]) in ("", "COMPLETED", "FAILED", "CANCELLED",
                                                              "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
                # a finished job writes summary.json before it exits: allow a few seconds for the file
                if time.monotonic() - gone_since.setdefault(record["job_id"], time.monotonic()) > 20:
                    log = sweep / record["stdout"]
                    tail = log.read_text()[-3000:] if log.exists() else "(no log)"
                    raise AssertionError(f"job {record['job_id']} ended ({job_state(record['job_id'])!r}) "
                                         f"without a summary.json; its log ends:\n{tail}")
        assert time.monotonic() < deadline, f"runs not finished after {timeout_s:.0f} s: {found}"
        for _, record in runs:
            release_requeued(record["job_id"], held_since)
        time.sleep(1)


def test_run_longer_than_its_time_limit_requeues_resumes_and_matches_an_uninterrupted_run(
        slurm_cluster, tmp_path):
    # A 2-minute limit with USR2 due 90 s before it. slurmctld checks time limits only every ~30 s, so
    # the signal lands 30-60 s into each attempt: every attempt trains for at least ~20 s after its
    # ~5-10 s start (a 1-minute limit signalled 2-32 s in, and on a slow machine attempts could end before
    # training began), and 1800 steps (~80 s of training on one idle core) never fit in one attempt: the
    # job must checkpoint, be requeued and resume, usually twice.
    overrides = (*TRAIN, "train.tokens=7372800")
    limited = submit_detached(tmp_path / "limited", *overrides, "hydra.launcher.timeout_min=2",
                              "hydra.launcher.signal_delay_s=90", "hydra.launcher.max_num_timeout=20")
    reference = submit_detached(tmp_path / "reference", *overrides)
    got, want = wait_for_summaries([(tmp_path / "limited", limited), (tmp_path / "reference", reference)],
                                   timeout_s=900)  # generous: loaded machines train slower
    log = (tmp_path / "limited" / limited["stdout"]).read_text()
    assert log.count("Requeued job") >= 1, log[-2000:]
    resumed_at = [int(m) for m in re.findall(r"resume: \S+ from step (\d+)", log)]
    assert resumed_at and max(resumed_at) > 0, log[-2000:]  # continued from a checkpoint, not from scratch
    assert "Requeued job" not in (tmp_path / "reference" / reference["stdout"]).read_text()
    assert got["status"] == want["status"] == "completed"
    assert got["steps"] == want["steps"] and got["tokens_seen"] == want["tokens_seen"]
    assert got["final_val_loss"] == pytest.approx(want["final_val_loss"], abs=1e-6)


def test_two_task_ddp_job_matches_the_one_task_job_at_the_same_global_batch(slurm_cluster, tmp_path):
    overrides = (*TRAIN, "train.tokens=163840")  # 40 steps of the same 4096-token global batch
    ddp = submit_detached(tmp_path / "ddp", *overrides, "hydra.launcher.tasks_per_node=2")
    single = submit_detached(tmp_path / "single", *overrides)
    got, want = wait_for_summaries([(tmp_path / "ddp", ddp), (tmp_path / "single", single)], timeout_s=180)
    rank1_log = tmp_path / "ddp" / ddp["stdout"].replace("_0_log.out", "_1_log.out")
    assert "global_rank=1(2)" in rank1_log.read_text()  # a second task really ran (submitit's env line)
    assert got["status"] == want["status"] == "completed" and got["steps"] == want["steps"]
    assert abs(got["final_val_loss"] - want["final_val_loss"]) <= 1e-4


def test_smoke_grid_through_slurm_then_a_rerun_skips_every_run(slurm_cluster, tmp_path):
    sweep = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "bitlaw.submit", "experiment=smoke", "hydra/launcher=slurm",
           f"hydra.sweep.dir={sweep}", "logger.wandb.mode=disabled", "train.threads=1"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and "4 run(s): 4 done" in first.stdout, first.stdout + first.stderr
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert len(summaries) == 4 and {s["status"] for s in summaries} == {"completed"}
    runs = {json.loads(p.read_text())["slurm_job_id"] for p in sweep.glob("*/run.json")}
    assert len(runs) == 4 and None not in runs  # each run was its own Slurm job

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "4 run(s): 4 skipped" in again.stdout, again.stdout
    status = subprocess.run([sys.executable, "-m", "bitlaw", "status", str(sweep)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert status.stdout.strip().endswith("4 runs: 4 done"), status.stdout
