"""Paths a new user walks (issue 13): each ends in a true answer or one clear line, and loses no data.

Launcher behaviour is checked with the torch-free stand-in app (tests/slurm_app) on the local launcher, so
each sweep takes a few seconds; the QAT job itself is started only where its own code is what is tested.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from sweep.contract import LOCK_FILE, hold_run_dir, lock_holder

pytestmark = pytest.mark.integration  # a user's path end to end: subprocesses, sweeps and the CLI
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# the QAT job, as short as a run gets: 2 steps of 1024 tokens on the tiny rung
FAST = ["model=tiny", "train.tokens=2048", "train.batch_tokens=1024", "train.seq_len=64", "train.threads=1",
        "train.eval_tokens=1024", "data.max_bytes=2000000", "logger.wandb.mode=disabled"]


def stand_in(sweep: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "tests.slurm_app", "-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep}",
            *overrides]


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweep", *args]


def ledger(sweep: Path) -> list[dict]:
    path = sweep / ".bitlaw" / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ----------------------------------------------------------------------------- identity of a run dir
@pytest.mark.slow
def test_resweep_of_a_dir_holding_another_runs_run_json_says_what_to_do(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    assert run(stand_in(sweep, "value=1")).returncode == 0
    meta = json.loads((sweep / "value=1" / "run.json").read_text())
    (sweep / "value=1" / "run.json").write_text(json.dumps({**meta, "run_id": "0123456789abcdef"}))
    again = run(stand_in(sweep, "value=1"))
    line = next(ln for ln in again.stdout.splitlines() if ln.startswith("[sweep] refuse value=1"))
    assert "run_id 0123456789abcdef" in line and "move the dir aside" in line and "mv " in line
    assert again.returncode == 1  # the sweep did not produce this run's result
    assert json.loads((sweep / "value=1" / "run.json").read_text())["run_id"] == "0123456789abcdef"


# ----------------------------------------------------------------------------- one job per run dir
@pytest.mark.slow
def test_a_second_job_on_a_held_run_dir_fails_fast_and_touches_nothing(tmp_path) -> None:
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.pt").write_bytes(b"the holder's checkpoint")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    with hold_run_dir(tmp_path):  # this test process plays the job that is training the dir
        assert lock_holder(tmp_path) == f"pid {os.getpid()} on {os.uname().nodename}"
        started = time.monotonic()
        out = run(sweep_cmd(*FAST, f"hydra.run.dir={tmp_path}"))
        took = time.monotonic() - started
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0] and f"pid {os.getpid()}" in lines[0], lines
    assert (tmp_path / "checkpoint" / "state.pt").read_bytes() == b"the holder's checkpoint"
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "run.json").exists()
    assert took < 60
    assert lock_holder(tmp_path) is None  # released with its holder


@pytest.mark.slow
def test_the_lock_is_held_while_training_and_released_after(tmp_path) -> None:
    out = run(sweep_cmd(*FAST, f"hydra.run.dir={tmp_path}"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / LOCK_FILE).read_text().startswith("pid ")  # the holder's name stays for the next one
    assert lock_holder(tmp_path) is None
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_second_submitter_skips_a_run_another_is_training(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    with hold_run_dir(sweep / "value=1"):  # the first submitter's job, still training value=1
        out = run(stand_in(sweep, "value=1,2"))
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("[sweep] skip value=1"))
    assert f"being trained by pid {os.getpid()}" in line
    assert [r["run"] for r in ledger(sweep)] == ["value=2"]  # value=1 was never submitted again
    assert not (sweep / "value=1" / "summary.json").exists()
    assert "1 busy" in out.stdout and "1 done" in out.stdout


@pytest.mark.parametrize("parallel", [1, 2], ids=["one-worker-second-run-queued", "a-worker-per-run"])
def test_killing_the_local_submitter_cancels_its_jobs(tmp_path, parallel: int) -> None:
    """The worker pool, stopped with every worker busy: with one worker the second run is still queued and
    must never start; with two both are running and both are cancelled."""
    sweep = tmp_path / "sweep"
    cmd = stand_in(sweep, "value=1,2", "sleep_s=120", f"hydra.launcher.parallel={parallel}")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(ledger(sweep)) < parallel and time.monotonic() < deadline:
        time.sleep(0.2)
    pids = [r["job_id"] for r in ledger(sweep)]
    assert len(pids) == parallel and all(Path(f"/proc/{pid}").exists() for pid in pids)
    time.sleep(1.0)  # the submitter is now in its wait loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert f"stopped by SIGTERM: cancelled {parallel} local job(s)" in err
    assert "run the same command again" in err
    for pid in pids:  # the jobs (submitit's controller and its training process) are gone, not orphaned
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not any((sweep / f"value={v}" / "summary.json").exists() for v in (1, 2))
    assert len(ledger(sweep)) == parallel  # one worker: its queued run was never started
    if parallel == 1:
        assert not (sweep / "value=2").exists()


# ----------------------------------------------------------------------------- the analysis commands
def fit_without_one_bit_runs(tmp_path: Path) -> Path:
    """The demo's fit as if its data had started at 2 bits (P_w 2.25): what a user's own sweep may give."""
    fit = json.loads((ROOT / "results" / "demo" / "fit.json").read_text())
    for entry in fit["fits"].values():
        if entry.get("P_range"):
            entry["P_range"] = [max(2.25, entry["P_range"][0]), entry["P_range"][1]]
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(fit))
    return path


def test_recommend_defaults_to_the_bit_widths_the_fit_has(tmp_path, capsys) -> None:
    from bitlaw.cli import main as bitlaw

    fit = fit_without_one_bit_runs(tmp_path)
    assert bitlaw(["recommend", str(fit), "--memory", "1GB", "--tokens", "1e9", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    compared = {row["bits"] for budget in payload["budgets"] for row in budget["rows"]}
    assert compared == {2, 3, 4, 16}
    # asking for 1 bit explicitly is still refused, naming what the fit allows
    assert bitlaw(["recommend", str(fit), "--memory", "1GB", "--tokens", "1e9", "--bits", "1,2"]) == 2
    assert "allowed: 2,3,4" in capsys.readouterr().err


def test_recommend_without_a_fit_or_preset_says_which_is_missing(capsys) -> None:
    from bitlaw.cli import main as bitlaw

    assert bitlaw(["recommend", "--memory", "1GB"]) == 2
    err = capsys.readouterr().err.strip()
    assert "FIT.json: required, or --preset NAME" in err and "not both" not in err


def test_plot_into_an_unwritable_path_is_one_line(tmp_path, capsys) -> None:
    from bitlaw.cli import main as bitlaw

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert bitlaw(["plot", "--preset", "1bw-kmeans", "-o", str(blocker / "plots")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "-o/--output: cannot create directory" in err[0] and str(blocker) in err[0]


# ----------------------------------------------------------------------------- the training job
@pytest.mark.slow
def test_a_corrupt_checkpoint_is_named_moved_aside_and_the_same_command_starts_afresh(tmp_path) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sweep.app import CONF_DIR
    from sweep.contract import compute_run_id

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="config", overrides=FAST), resolve=True)
    (tmp_path / "run.json").write_text(json.dumps({"run_id": compute_run_id(cfg)}))  # this run, interrupted
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.pt").write_bytes(b"\x80\x04 torn by a bad disk")
    command = sweep_cmd(*FAST, f"hydra.run.dir={tmp_path}")
    first = run(command)
    assert first.returncode == 2, first.stderr[-2000:]
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0] and "state.pt is corrupt" in lines[0], lines
    assert "run the same command again" in lines[0]
    assert not (tmp_path / "checkpoint" / "state.pt").exists()
    assert [p.name.split("-")[0] for p in (tmp_path / "checkpoint").iterdir()] == ["state.pt.corrupt"]
    again = run(command)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_single_run_prints_its_dir_progress_and_final_loss_and_names_the_resume_command(tmp_path) -> None:
    overrides = [*FAST, "train.tokens=40960", "train.log_every=1", "train.checkpoint_every_s=1e9"]
    done = run(sweep_cmd(*overrides, f"hydra.run.dir={tmp_path / 'a'}"))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"[run] run dir {tmp_path / 'a'}"
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert lines[-1].startswith("[run] completed in ") and f"final_val_loss {summary['final_val_loss']:.4f}" \
        in lines[-1]

    run_dir = tmp_path / "b"
    proc = subprocess.Popen(sweep_cmd(*overrides, f"hydra.run.dir={run_dir}"), cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (run_dir / "metrics.jsonl").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err[-2000:]
    # the exact command, pinned to this run dir (the default dir is a new timestamp per command)
    assert f"to resume: python -m sweep {' '.join(overrides)} hydra.run.dir={run_dir}" in out + err


@pytest.mark.slow
def test_a_single_runs_progress_line_has_step_tokens_loss_speed_and_eta(tmp_path) -> None:
    from sweep.app import Progress

    (tmp_path / "run.json").write_text(json.dumps({"steps": 10}))
    progress = Progress(tmp_path)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 2, "tokens": 2048, "train_loss": 3.5, "tokens_per_s": 1000.0}) + "\n")
    assert progress.line() == "[run] step 2/10 · 2,048 tokens · loss 3.5000 · 1,000 tokens/s"
    assert progress.line() is None  # nothing new: no repeated line
    time.sleep(0.1)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "tokens": 4096, "train_loss": 3.0, "tokens_per_s": 1000.0}) + "\n")
    line = progress.line()
    assert line is not None and line.startswith("[run] step 4/10 · 4,096 tokens · loss 3.0000")
    assert "ETA" in line


def test_the_tours_outputs_are_git_ignored() -> None:
    paths = ["fit.json", "runs.csv", "plots/loss_vs_n.png", "results/mine/report.md"]
    out = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == paths
    kept = subprocess.run(["git", "check-ignore", "results/demo/fit.json"], cwd=ROOT, capture_output=True)
    assert kept.returncode == 1  # the committed study is not


@pytest.mark.parametrize("override, says", [
    ("trian.lr=1", "did you mean train.lr?"),
    ("model.d_modle=64", "did you mean model.d_model?"),
    ("point=kmeans9", "Available options in 'point': bf16 kmeans1"),
    ("hydra.launcher.mem_gb=abc", "mem_gb=abc: Value 'abc' of type 'str' could not be converted"),
])
def test_hydra_errors_are_one_line_with_the_way_out(tmp_path, override: str, says: str) -> None:
    out = run(sweep_cmd("-m", override, f"hydra.sweep.dir={tmp_path}"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Config search path" not in lines[0], lines


@pytest.mark.slow
def test_the_closing_summary_prints_once_and_agrees_with_the_run_lines_and_status(tmp_path) -> None:
    sweep, markers = tmp_path / "sweep", tmp_path / "markers"
    markers.mkdir()
    (markers / "fail-2").touch()
    out = run(stand_in(sweep, "value=1,2", f"fail_marker={markers}"))
    assert out.returncode == 1
    per_run = [ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("[sweep] ") and
               ln.split()[1] in ("done", "failed", "cancelled", "skipped")]
    closing = [ln for ln in out.stdout.splitlines() if " run(s): " in ln]
    assert sorted(per_run) == ["done", "failed"] and closing == [f"[sweep] 2 run(s): 1 done, 1 failed  "
                                                                 f"(sweep dir {sweep})"]
    assert out.stderr.count("sweep: error:") == 1 and "value=2" in out.stderr
    status = run([sys.executable, "-m", "bitlaw", "status", str(sweep), "--no-slurm"])
    assert status.returncode == 1 and status.stdout.strip().endswith("2 runs: 1 done, 1 failed")
