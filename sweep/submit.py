"""Launch a sweep through submitit with frozen configs, idempotent re-runs and a detached mode.

    python -m sweep.submit [--detach] [--app MODULE] [OVERRIDES...]

runs the Hydra app (`python -m sweep -m OVERRIDES`) with the submitit launchers' `launch` replaced by
`SweepLauncher.launch`, which differs from hydra-submitit-launcher 1.2.0 in four ways:

- Frozen configs. The stock launcher re-composes each job's config from conf/ when the job *starts*, so
  editing conf/ while jobs are queued changes them. Here every job's config is composed at submission,
  written to `SWEEP_DIR/.bitlaw/configs/<run>.yaml` and handed to the job, which never reads conf/.
- Idempotent re-sweeps. A run whose summary says completed is skipped, and so is one whose Slurm job from
  an earlier submission is still pending or running; failed and cancelled runs are submitted again.
- Every run ends with an outcome. The stock launcher raises at the first failed job and hangs on none;
  here the launcher waits for all jobs, then prints one line per run (done / failed / cancelled).
- `--detach` submits, records the job ids in `SWEEP_DIR/.bitlaw/jobs.jsonl` and returns: no process stays
  alive until the jobs end. `bitlaw status SWEEP_DIR` then works from the sweep dir alone.

User errors (Slurm down, a request that can never fit, --detach without Slurm) print one line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import runpy
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sweep.composed import ComposedJob
from sweep.ledger import (
    Submission,
    append_submissions,
    config_snapshot_path,
    latest_submissions,
    write_text_atomic,
)
from sweep.rundir import read_json
from sweep.slurm import SubmissionError, active_slurm_states, check_slurm_reachable, sbatch_error_line

# Slurm states after which a job without a result pickle will never produce one.
_UNFINISHED_STATES = {"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED",
                      "CONFIGURING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}
_POLL_S = 1.0           # how often to look for result pickles (a stat per job)
_SCHEDULER_POLL_S = 3.0  # how often to ask the scheduler (one sacct call for all jobs)


@dataclass
class RunOutcome:
    run: str
    state: str  # done | failed | cancelled | skipped | queued | submitted
    job_id: str = ""
    detail: str = ""


def _completed_summary(run_dir: Path) -> dict | None:
    summary = read_json(run_dir / "summary.json")
    return summary if summary and summary.get("status") == "completed" else None


def _expected_run_id(config: Any) -> str | None:
    """The run_id the job will compute for this config (sweep.rundir), or None if it cannot resolve here."""
    import copy

    from omegaconf import OmegaConf, open_dict, read_write

    from sweep.rundir import compute_run_id

    # What run_job hands the task: the config without its `hydra` node, resolved.
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    try:
        return compute_run_id(OmegaConf.to_container(task, resolve=True))
    except Exception:  # an interpolation only the job can resolve; the job checks run_id itself
        return None


def _tail(path: Path, n_lines: int = 5) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n_lines:])


class SweepLauncher:
    """Replaces the submitit launchers' `launch`; collects every batch's outcomes for the final report."""

    def __init__(self, detach: bool) -> None:
        self.detach = detach
        self.outcomes: list[RunOutcome] = []
        self.sweep_dir: Path | None = None
        self.total_jobs: int | None = None  # the whole sweep (set by the sweeper hook)
        # Local jobs at once: the sweeper's max_batch_size, which the hook turns from a batch size (each
        # batch waiting for its slowest job) into the width of a rolling pool.
        self.parallel: int | None = None
        self.started = time.monotonic()
        self.trained = 0  # runs that ended in this invocation (skipped ones excluded from the ETA)

    def progress(self) -> str:
        """'12/54 · 42 left · 2m10s elapsed · ETA 7m35s': runs accounted for so far, for the user."""
        done = len(self.outcomes)
        elapsed = time.monotonic() - self.started
        if self.total_jobs is None:
            return f"{done} run(s) · {_duration(elapsed)} elapsed"
        left = max(self.total_jobs - done, 0)
        eta = f" · ETA {_duration(elapsed / self.trained * left)}" if self.trained and left else ""
        return f"{done}/{self.total_jobs} · {left} left · {_duration(elapsed)} elapsed{eta}"

    # ---------------------------------------------------------------- the launch hook
    def launch(self, launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        import submitit
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobReturn, JobStatus
        from omegaconf import OmegaConf, open_dict, read_write

        cluster = launcher._EXECUTOR
        sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).resolve()
        self.sweep_dir = sweep_dir
        if self.detach and cluster != "slurm":
            raise SubmissionError("--detach needs hydra/launcher=slurm: local jobs are children of this "
                                  "process and would die with it")
        if cluster == "slurm":
            check_slurm_reachable()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        previous = latest_submissions(sweep_dir)
        live = active_slurm_states([s.job_id for s in previous.values() if s.executor == "slurm"])

        to_submit: list[tuple[str, Any, int, list[str]]] = []  # (run, composed config, job_num, overrides)
        returns: list = []
        loader = launcher.hydra_context.config_loader
        for offset, overrides in enumerate(job_overrides):
            config = loader.load_sweep_config(launcher.config, list(overrides))
            # Same resolver-cache copy as Hydra's own launcher: ${now:} etc. agree across jobs.
            OmegaConf.copy_cache(from_config=launcher.config, to_config=config)
            HydraConfig.instance().set_config(config)
            run = str(config.hydra.sweep.subdir)
            handled = self._already_handled(sweep_dir / run, run, _expected_run_id(config),
                                            previous.get(run), live)
            if handled is not None:
                self.outcomes.append(handled)
                print(f"[sweep] {'skip' if handled.state != 'failed' else 'refuse'} {run}: {handled.detail}"
                      f"  [{self.progress()}]", flush=True)
                returns.append(JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED))
                continue
            with read_write(config.hydra.job), open_dict(config.hydra.job):
                config.hydra.job.num = initial_job_idx + offset
            to_submit.append((run, config, initial_job_idx + offset, list(overrides)))
        if not to_submit:
            return returns

        for run, config, _, _ in to_submit:
            write_text_atomic(config_snapshot_path(sweep_dir, run), OmegaConf.to_yaml(config))
        executor = self._make_executor(launcher, cluster)
        job = ComposedJob(launcher.hydra_context, launcher.task_function, Singleton.get_state())
        finished_returns = returns + [JobReturn(overrides=o, status=JobStatus.COMPLETED)
                                      for *_, o in to_submit]
        if cluster != "slurm" and self.parallel and len(to_submit) > self.parallel:
            self._run_rolling(executor, job, to_submit, sweep_dir, cluster)
            return finished_returns
        try:
            # sbatch writes its rejection to the inherited stderr as well as into the exception; keep
            # it off the terminal so the user sees one line, and keep it in the error if it's not there.
            with _captured_stderr() as sbatch_stderr:
                jobs = executor.map_array(job, [c for _, c, _, _ in to_submit],
                                          [n for _, _, n, _ in to_submit])
        except submitit.core.utils.FailedJobError as err:
            said = str(err) if "error:" in str(err) else "".join(sbatch_stderr)
            raise SubmissionError(_describe_rejection(launcher.params, said)) from None
        else:
            sys.stderr.write("".join(sbatch_stderr))

        append_submissions(sweep_dir, [_submission(sweep_dir, run, j, cluster, overrides)
                                       for (run, _, _, overrides), j in zip(to_submit, jobs, strict=True)])
        print(f"[sweep] submitted {len(jobs)} job(s) to {cluster}: {jobs[0].job_id}"
              + ("" if len(jobs) == 1 else f" … {jobs[-1].job_id}"), flush=True)
        if cluster != "slurm":
            print(f"[sweep] running: {', '.join(run for run, *_ in to_submit)}", flush=True)
        if self.detach:
            self.outcomes += [RunOutcome(run, "submitted", j.job_id)
                              for (run, *_), j in zip(to_submit, jobs, strict=True)]
            return returns + [JobReturn(overrides=o, status=JobStatus.COMPLETED) for *_, o in to_submit]

        run_of_job = {j.job_id: run for (run, *_), j in zip(to_submit, jobs, strict=True)}
        self._wait_for(jobs, cluster,
                       lambda j, state: self._record(sweep_dir, run_of_job[j.job_id], j, state))
        # The sweeper raises on a FAILED return and would stop the sweep; the failure is reported in the
        # outcome lines and main()'s exit status instead.
        return finished_returns

    def _record(self, sweep_dir: Path, run: str, job: Any, final_state: str) -> None:
        """One finished job: its outcome, printed with the sweep's progress."""
        outcome = self._outcome(sweep_dir, run, job, final_state)
        self.outcomes.append(outcome)
        self.trained += 1
        print(f"[sweep] {outcome.state:9s} {outcome.run}  {outcome.detail}  [{self.progress()}]", flush=True)

    def _run_rolling(self, executor: Any, job: Any, to_submit: list, sweep_dir: Path, cluster: str) -> None:
        """Local jobs through a pool of `parallel` slots: the next run starts as soon as any run ends."""
        pending = list(to_submit)
        running: dict[str, tuple[str, Any]] = {}  # job_id -> (run, job)
        while pending or running:
            while pending and len(running) < (self.parallel or 1):
                run, config, job_num, overrides = pending.pop(0)
                submitted = executor.submit(job, config, job_num)
                append_submissions(sweep_dir, [_submission(sweep_dir, run, submitted, cluster, overrides)])
                print(f"[sweep] started   {run}  (job {submitted.job_id})", flush=True)
                running[submitted.job_id] = (run, submitted)
            time.sleep(_POLL_S)
            for job_id, (run, submitted) in list(running.items()):
                final_state = _local_final_state(submitted)
                if final_state is None:
                    continue
                del running[job_id]
                self._record(sweep_dir, run, submitted, final_state)

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _already_handled(run_dir: Path, run: str, expected_run_id: str | None, previous: Submission | None,
                         live: dict[str, str]) -> RunOutcome | None:
        """An outcome for a run that must not be submitted now, else None."""
        summary = _completed_summary(run_dir)
        if summary is not None:
            run_id = (read_json(run_dir / "run.json") or {}).get("run_id")
            if expected_run_id is not None and run_id is not None and run_id != expected_run_id:
                # Same directory name, different experiment (conf/ changed): never overwrite a result.
                return RunOutcome(run, "failed", detail=f"its dir holds completed run_id {run_id} but the "
                                  f"config now gives {expected_run_id}; use a new sweep.name")
            return RunOutcome(run, "skipped", detail=f"completed (run_id {run_id}, "
                                                     f"final_val_loss {_loss(summary)})")
        if previous is not None and previous.job_id in live:
            return RunOutcome(run, "queued", previous.job_id,
                              f"already in Slurm as job {previous.job_id} ({live[previous.job_id]})")
        return None

    @staticmethod
    def _make_executor(launcher: Any, cluster: str) -> Any:
        """The executor hydra-submitit-launcher would build from the same `hydra.launcher` keys."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        params = dict(launcher.params)
        folder = params.pop("submitit_folder")
        init = {f"{cluster}_{k}": params.pop(k) for k in ["max_num_timeout"] if k in params}
        params.pop("_target_", None)
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **init)
        # Keys shared by all executors go unprefixed; everything else (partition, account, qos, setup,
        # signal_delay_s, additional_parameters, site keys added with `+hydra.launcher.KEY=`) is slurm_KEY.
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{cluster}_{k}": v for k, v in params.items()})
        return executor

    @staticmethod
    def _wait_for(jobs: list, cluster: str, on_finish: Any) -> None:
        """Block until every job has a result pickle or a final scheduler state; ``on_finish(job,
        final_state)`` is called once per job as soon as it ends."""
        finished: dict[str, str] = {}
        last_scheduler_poll = 0.0
        while len(finished) < len(jobs):
            ask_scheduler = time.monotonic() - last_scheduler_poll >= _SCHEDULER_POLL_S
            if ask_scheduler and cluster == "slurm":
                jobs[0].watcher.update()  # one sacct call for every job of this sweep
                last_scheduler_poll = time.monotonic()
            for j in jobs:
                if j.job_id in finished:
                    continue
                if cluster != "slurm":
                    local_state = _local_final_state(j)
                    if local_state is not None:
                        finished[j.job_id] = local_state
                elif j.paths.result_pickle.exists():
                    finished[j.job_id] = "RESULT"
                elif ask_scheduler:
                    state = j.watcher.get_state(j.job_id, mode="cache")
                    if state.split()[0] not in _UNFINISHED_STATES:
                        finished[j.job_id] = state
                if j.job_id in finished:
                    on_finish(j, finished[j.job_id])
            if len(finished) < len(jobs):
                time.sleep(_POLL_S)

    @staticmethod
    def _outcome(sweep_dir: Path, run: str, job: Any, final_state: str) -> RunOutcome:
        from hydra.core.utils import JobStatus

        run_dir = sweep_dir / run
        if final_state != "RESULT":
            state = "cancelled" if final_state.startswith("CANCELLED") else "failed"
            return RunOutcome(run, state, job.job_id, f"job {final_state}; {_tail(job.paths.stderr, 3)}")
        try:
            job_return = job.results()[0]
        except Exception as err:  # submitit re-raises the job's error; ComposedJob wrote its summary
            summary = read_json(run_dir / "summary.json") or {}
            return RunOutcome(run, "failed", job.job_id, summary.get("reason") or _error_line(str(err)))
        if job_return.status == JobStatus.FAILED:
            return RunOutcome(run, "failed", job.job_id, repr(job_return._return_value))
        summary = read_json(run_dir / "summary.json") or {}
        if summary.get("status") == "completed":
            return RunOutcome(run, "done", job.job_id, f"final_val_loss {_loss(summary)}")
        if summary:
            return RunOutcome(run, "failed", job.job_id, f"{summary.get('status')}: {summary.get('reason')}")
        return RunOutcome(run, "done", job.job_id, "job returned (no summary.json)")


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 (inherited by subprocesses such as sbatch) to a temp file meanwhile;
    the yielded list receives the captured text when the block ends."""
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def _local_final_state(job: Any) -> str | None:
    """'RESULT' once a local job left its result pickle, its submitit state if the process exited without
    one, None while it runs."""
    if job.paths.result_pickle.exists():
        return "RESULT"
    return job.state if job.done() else None


def _submission(sweep_dir: Path, run: str, job: Any, cluster: str, overrides: list[str]) -> Submission:
    """The ledger line `bitlaw status` reads for one submitted job (paths relative to the sweep dir)."""
    rel = lambda p: os.path.relpath(p, sweep_dir)  # noqa: E731
    return Submission(run=run, job_id=job.job_id, executor=cluster,
                      submitted=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      stdout=rel(job.paths.stdout), stderr=rel(job.paths.stderr),
                      config=rel(config_snapshot_path(sweep_dir, run)), overrides=overrides)


def _loss(summary: dict) -> str:
    loss = summary.get("final_val_loss")
    return f"{loss:.4f}" if isinstance(loss, float) else str(loss)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _error_line(message: str) -> str:
    """The exception line of a traceback that submitit wrapped into FailedJobError."""
    lines = [ln for ln in message.splitlines() if ln and not ln.startswith((" ", "-", "You can check"))]
    return lines[-1] if lines else message.strip()


def _describe_rejection(params: dict, message: str) -> str:
    asked = ", ".join(f"{k}={params[k]}" for k in ("partition", "nodes", "tasks_per_node", "cpus_per_task",
                                                   "gpus_per_node", "mem_gb", "timeout_min")
                      if params.get(k) is not None)
    return (f"hydra.launcher: Slurm rejected the request ({asked}): {sbatch_error_line(message)}; "
            "lower it to what a node offers (see `sinfo -o '%P %c %m %G %l'`)")


def _install(tracker: SweepLauncher) -> None:
    """Route the submitit launchers' `launch` to `tracker` in this process (the submitter only)."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

    def launch(self: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        return tracker.launch(self, job_overrides, initial_job_idx)

    # Hydra's plugin scan re-executes plugin modules (new class objects), so patch the classes Hydra
    # will instantiate, after forcing that scan. Jobs unpickle ComposedJob and never run `launch`.
    registered = Plugins.instance().class_name_to_class.values()
    for cls in {BaseSubmititLauncher, *[c for c in registered if c.__name__ == "BaseSubmititLauncher"]}:
        cls.launch = launch  # type: ignore[method-assign]

    # The launcher sees one batch at a time; the sweeper's batching tells the total, for progress lines.
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    split_arguments = BasicSweeper.split_arguments

    def counting_split(overrides: Any, max_batch_size: Any) -> Any:
        # One batch for the whole sweep: Slurm gets a single job array (array_parallelism bounds it) and
        # local jobs a rolling pool of max_batch_size slots, instead of batches that each wait for their
        # slowest job (on the demo grid that barrier cost ~27 % of the wall time).
        batches = split_arguments(overrides, None)
        tracker.total_jobs = sum(len(batch) for batch in batches)
        tracker.parallel = max_batch_size
        return batches

    BasicSweeper.split_arguments = staticmethod(counting_split)  # type: ignore[method-assign]


_HYDRA_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}


def _split_hydra_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra flags with their values, overrides): Hydra's parser wants the flags before the overrides."""
    flags: list[str] = []
    overrides: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in _HYDRA_FLAGS_WITH_VALUE:
            flags += [arg, next(it, "")]
        elif arg.startswith("-"):
            flags.append(arg)
        else:
            overrides.append(arg)
    return flags, overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.submit",
        description="Run a Hydra multirun with frozen configs, skipping completed runs; "
                    "--detach submits to Slurm and returns.")
    parser.add_argument("--detach", action="store_true",
                        help="submit and return (needs hydra/launcher=slurm); then `bitlaw status DIR`")
    parser.add_argument("--app", default="sweep.app",
                        help="module whose __main__ runs the Hydra app (default: sweep.app)")
    # Everything else goes to Hydra: overrides, and Hydra's own flags such as --config-path DIR.
    args, rest = parser.parse_known_args(argv)
    hydra_flags, overrides = _split_hydra_flags(rest)

    tracker = SweepLauncher(detach=args.detach)
    _install(tracker)
    saved_argv = sys.argv
    # HYDRA_FULL_ERROR makes Hydra re-raise instead of printing a stack trace, so a SubmissionError
    # reaches the handler below and prints as one line.
    saved_env = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.argv = [args.app, "-m", *hydra_flags, *overrides]
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        runpy.run_module(args.app, run_name="__main__", alter_sys=False)
    except SubmissionError as err:
        print(f"sweep.submit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if tracker.sweep_dir is not None and not tracker.detach:
            print(f"\n[sweep] interrupted: submitted jobs keep running; follow with: bitlaw status "
                  f"{tracker.sweep_dir}", file=sys.stderr)
        return 130
    except (HydraException, OmegaConfBaseException) as err:  # a bad override or config
        # Hydra's messages span lines (e.g. one allowed option per line); keep them on one.
        message = " ".join(ln.strip() for ln in str(err).splitlines() if ln.strip())
        print(f"sweep.submit: error: {message or type(err).__name__}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # Hydra exits on bad overrides after printing its own message
        if exit_.code not in (0, None):
            return int(exit_.code) if isinstance(exit_.code, int) else 2
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env
    return _report(tracker)


def _report(tracker: SweepLauncher) -> int:
    counts: dict[str, int] = {}
    for outcome in tracker.outcomes:
        counts[outcome.state] = counts.get(outcome.state, 0) + 1
    totals = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"[sweep] {len(tracker.outcomes)} run(s): {totals or 'none'}  (sweep dir {tracker.sweep_dir})")
    if tracker.detach and tracker.sweep_dir is not None:
        print(f"[sweep] detached; follow with: bitlaw status {tracker.sweep_dir}")
    return 1 if counts.get("failed") or counts.get("cancelled") else 0


if __name__ == "__main__":
    raise SystemExit(main())
