"""The launcher's one outcome classifier (outcomes.classify), fed by both Job-like adapters, and the retired
process-per-run switch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus

from sweep.launch.jobs import PoolRun, SlurmRun
from sweep.outcomes import classify
from sweep.pool import Finished

ROOT = Path(__file__).resolve().parents[1]


def returned(value: object) -> JobReturn:
    return JobReturn(overrides=["a=1"], status=JobStatus.COMPLETED, _return_value=value)


class SubmititJob:
    """The parts of a submitit Job that SlurmRun reads: its id, its stderr file and its results."""

    def __init__(self, tmp_path: Path, result: object) -> None:
        self.job_id = "42_0"
        self.paths = type("Paths", (), {"stderr": tmp_path / "42_0.err"})()
        self.paths.stderr.write_text("line 1\nslurmstepd: CANCELLED AT 12:00\n")
        self.result = result

    def results(self) -> list:
        if isinstance(self.result, Exception):
            raise self.result
        return [self.result]


def write_summary(sweep: Path, run: str, summary: dict) -> None:
    (sweep / run).mkdir(parents=True, exist_ok=True)
    (sweep / run / "summary.json").write_text(json.dumps(summary))


def test_a_pool_run_and_a_slurm_job_with_the_same_end_get_the_same_outcome(tmp_path) -> None:
    write_summary(tmp_path, "a=1", {"status": "completed", "final_val_loss": 2.5})
    ends = [PoolRun(Finished("a=1", 7, True, returned(3.0))),
            SlurmRun("a=1", SubmititJob(tmp_path, returned(3.0)), "RESULT")]
    outcomes = [classify(tmp_path, end) for end in ends]
    assert [(o.state, o.detail, o.value) for o in outcomes] == [("done", "final_val_loss 2.5000", 3.0)] * 2
    assert [o.job_id for o in outcomes] == ["7", "42_0"]
    assert all(o.returned.overrides == ["a=1"] for o in outcomes)  # the sweeper gets the run's JobReturn


def test_a_failed_run_says_its_summarys_reason_else_the_error_line(tmp_path) -> None:
    died = PoolRun(Finished("b=1", 7, False, error="the worker process died (exit code 3)"))
    assert (classify(tmp_path, died).state, classify(tmp_path, died).detail) == \
        ("failed", "the worker process died (exit code 3)")
    raised = SlurmRun("b=1", SubmititJob(tmp_path, RuntimeError("Traceback\n  x\nValueError: bad")), "RESULT")
    assert classify(tmp_path, raised).detail == "ValueError: bad"
    write_summary(tmp_path, "b=1", {"status": "failed", "reason": "ConfigError: lr < 0"})
    assert classify(tmp_path, died).detail == classify(tmp_path, raised).detail == "ConfigError: lr < 0"


def test_a_job_without_a_result_ends_in_its_scheduler_state_with_its_log_tail(tmp_path) -> None:
    cancelled = classify(tmp_path, SlurmRun("c=1", SubmititJob(tmp_path, None), "CANCELLED by 0"))
    assert cancelled.state == "cancelled"
    assert cancelled.detail == "job CANCELLED by 0; line 1 | slurmstepd: CANCELLED AT 12:00"
    assert classify(tmp_path, SlurmRun("c=1", SubmititJob(tmp_path, None), "TIMEOUT")).state == "failed"


def test_a_busy_return_or_a_non_completed_summary_is_not_done(tmp_path) -> None:
    busy = PoolRun(Finished("d=1", 7, True, returned({"status": "busy", "reason": "held by pid 9"})))
    assert (classify(tmp_path, busy).state, classify(tmp_path, busy).detail) == ("busy", "held by pid 9")
    write_summary(tmp_path, "e=1", {"status": "interrupted", "reason": "SIGTERM"})
    stopped = classify(tmp_path, PoolRun(Finished("e=1", 7, True, returned(None))))
    assert (stopped.state, stopped.detail) == ("failed", "interrupted: SIGTERM")
    bare = classify(tmp_path, PoolRun(Finished("f=1", 7, True, returned(5))))  # another Hydra app's task
    assert (bare.state, bare.detail, bare.value) == ("done", "job returned (no summary.json)", 5)


def test_the_retired_pool_switch_is_a_one_line_error_and_nothing_runs(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    out = subprocess.run([sys.executable, "-m", "tests.slurm_app", "-m", "hydra/launcher=local",
                          f"hydra.sweep.dir={sweep}", "value=1", "hydra.launcher.pool=false"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: error: hydra.launcher.pool: removed"), lines
    assert not (sweep / "value=1").exists()
