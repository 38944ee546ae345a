"""The local worker pool (sweep/pool.py): workers are reused, a run that kills its worker fails alone, and
closing the pool ends every worker."""

from __future__ import annotations

import os
from pathlib import Path

import cloudpickle

from sweep.pool import Task, WorkerPool


def pid_and_value(value: int) -> tuple[int, int]:
    print(f"run {value}")  # goes to the run's own log file, not the submitter's terminal
    return os.getpid(), value * 2


def die(code: int) -> None:
    os._exit(code)


def fail() -> None:
    raise ValueError("deliberate")


def task(tmp_path: Path, key: str, function, *args) -> Task:
    return Task(key, cloudpickle.dumps((function, args)), tmp_path / f"{key}.out", tmp_path / f"{key}.err")


def test_one_worker_trains_runs_in_turn_and_logs_each_to_its_own_files(tmp_path) -> None:
    pool = WorkerPool(1)
    try:
        done = list(pool.run([task(tmp_path, f"r{i}", pid_and_value, i) for i in range(3)]))
    finally:
        pool.close()
    assert [f.key for f in done] == ["r0", "r1", "r2"] and all(f.ok for f in done)
    assert [f.value[1] for f in done] == [0, 2, 4]
    assert len({f.value[0] for f in done}) == 1 and pool.started == 1  # one process, reused
    assert (tmp_path / "r1.out").read_text() == "run 1\n"


def test_a_run_that_kills_its_worker_fails_alone_and_the_worker_is_replaced(tmp_path) -> None:
    pool = WorkerPool(1)  # one worker: the run after the one that killed it needs a replacement
    tasks = [task(tmp_path, "dies", die, 3), task(tmp_path, "raises", fail),
             *[task(tmp_path, f"ok{i}", pid_and_value, i) for i in range(4)]]
    try:
        done = {f.key: f for f in pool.run(tasks)}
    finally:
        pool.close()
    assert not done["dies"].ok and done["dies"].error == "the worker process died (exit code 3)"
    assert not done["raises"].ok and done["raises"].error == "ValueError: deliberate"
    assert "Traceback" in (tmp_path / "raises.err").read_text()
    assert all(done[f"ok{i}"].ok and done[f"ok{i}"].value[1] == 2 * i for i in range(4))
    assert pool.started == 2  # the worker, and one replacement for it


class Stop(Exception):
    pass


def test_close_ends_busy_workers_and_names_their_runs(tmp_path) -> None:
    """As when ^C interrupts the submitter: the loop is left with a run in flight, then close() ends it."""
    import time

    pool = WorkerPool(1)
    pids: list[int] = []

    def started(task: Task, pid: int) -> None:
        pids.append(pid)
        raise Stop

    try:
        list(pool.run([task(tmp_path, "long", time.sleep, 60)], started))
    except Stop:
        pass
    assert pool.close(timeout_s=5) == ["long"]
    status = Path(f"/proc/{pids[0]}/status")
    assert not status.exists() or "zombie" in status.read_text()
