"""Long-lived local workers: each imports torch once and trains many runs in turn.

A submitit local job is a fresh interpreter per run (~3.7 s of start-up on 2 cores: Python, torch, Hydra,
the pickles), a third of the demo's wall time. The pool starts `parallel` worker processes; each receives a
run (a cloudpickled callable and its arguments), runs it with its stdout/stderr in the run's log files, and
sends back the result or the error. A run that kills its worker (a segfault, `os._exit`, the OOM killer)
fails alone: the pool reports it with the exit code and starts a new worker. Workers die with the
submitter: `PR_SET_PDEATHSIG` on Linux, and `close()` on every exit path of the submitter.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import cloudpickle

_PR_SET_PDEATHSIG = 1


@dataclass
class Task:
    key: str                 # the run (its dir relative to the sweep dir)
    payload: bytes           # cloudpickle of (callable, args)
    stdout: Path
    stderr: Path


@dataclass
class Finished:
    key: str
    worker_pid: int
    ok: bool
    value: Any = None        # the callable's return value (ok)
    error: str = ""          # the exception line, or how the worker died (not ok)
    traceback: str = ""


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the submitter dies, however it dies (even SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: close() and the process group still end the workers
        pass


def _worker(conn: Connection, warm_imports: tuple[str, ...], env: dict[str, str]) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is the submitter's to handle: it ends the workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the submitter's handler, inherited by the fork
    os.environ.update(env)
    # Python-level streams on the file descriptors that each run redirects to its log files (the forked
    # submitter's sys.stdout may be another object, e.g. a test runner's capture)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    for module in warm_imports:  # paid once per worker, not once per run
        __import__(module)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        key, payload, stdout, stderr = message
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        with open(stdout, "ab") as out, open(stderr, "ab") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                function, args = cloudpickle.loads(payload)
                value = function(*args)
                reply = (key, True, cloudpickle.dumps(value), "", "")
            except BaseException as error:  # noqa: BLE001 - every failure is the run's, not the worker's
                trace = traceback.format_exc()
                sys.stderr.write(trace)
                reply = (key, False, None, f"{type(error).__name__}: {error}", trace)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
        conn.send(reply)


class WorkerPool:
    """`parallel` workers; `run(tasks)` yields a Finished per task as each ends, in order of ending."""

    def __init__(self, parallel: int, warm_imports: tuple[str, ...] = (), env: dict[str, str] | None = None):
        # fork: a worker starts from the submitter's memory in milliseconds (no re-import of Hydra or
        # torch). The submitter may have imported torch (the config checks do) but has run no torch op, so
        # no thread pool exists yet that a fork could leave half-copied.
        self.context = multiprocessing.get_context("fork")
        self.parallel = max(1, parallel)
        self.warm_imports, self.env = warm_imports, dict(env or {})
        self.idle: list[tuple[Any, Connection]] = []
        self.busy: dict[Connection, tuple[Any, Task]] = {}
        self.started = 0  # workers started, replacements included

    def _start_worker(self) -> tuple[Any, Connection]:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child, self.warm_imports, self.env),
                                       daemon=True)
        process.start()
        child.close()
        self.started += 1
        return process, parent

    def run(self, tasks: list[Task],
            on_start: Callable[[Task, int], None] | None = None) -> Iterator[Finished]:
        pending = list(tasks)
        while pending or self.busy:
            while pending and len(self.busy) < self.parallel:
                process, conn = self.idle.pop() if self.idle else self._start_worker()
                task = pending.pop(0)
                conn.send((task.key, task.payload, str(task.stdout), str(task.stderr)))
                self.busy[conn] = (process, task)
                if on_start:
                    on_start(task, process.pid)
            for conn in wait(list(self.busy)):
                process, task = self.busy.pop(conn)
                try:
                    key, ok, value, error, trace = conn.recv()
                except (EOFError, OSError):  # the worker died mid-run: the run fails, a new worker follows
                    process.join(timeout=5)
                    code = process.exitcode
                    how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else \
                        f"exit code {code}"
                    conn.close()
                    yield Finished(task.key, process.pid, False, error=f"the worker process died ({how})")
                    continue
                self.idle.append((process, conn))
                yield Finished(key, process.pid, ok, cloudpickle.loads(value) if ok else None, error, trace)

    def close(self, timeout_s: float = 10.0) -> list[str]:
        """End every worker: idle ones are asked to exit, busy ones terminated (SIGTERM, then SIGKILL).
        Returns the keys of the runs that were cut off."""
        cut = [task.key for _, task in self.busy.values()]
        for _, conn in self.idle:
            try:
                conn.send(None)
            except OSError:
                pass
        for process, _ in self.busy.values():
            process.terminate()
        deadline = time.monotonic() + timeout_s
        for process, _ in [*self.idle, *self.busy.values()]:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(timeout=1)
        self.idle.clear()
        self.busy.clear()
        return cut
