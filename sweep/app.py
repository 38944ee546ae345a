"""The Hydra app (``python -m sweep``): compose the config, resolve the job's thread count, train.

Kept thin on purpose: the launcher pickles the task function ``train_task``, a plain module-level function
of this importable module, so cloudpickle pickles it *by reference* (a job's tracebacks then name real files)
and the job imports ``sweep.train`` itself (hydra-submitit pitfall: heavy or unpicklable objects belong
inside the job). Requeue after preemption is the launcher's ``ComposedJob.checkpoint()`` (it resubmits the
same composed config); the job finds its checkpoint in its output dir and resumes.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweep import contract
from sweep.recipe import cpu_count, register_resolvers

log = logging.getLogger("sweep")

# Resolvers must be registered at import, before @hydra.main runs, so they reach submitit jobs too.
register_resolvers()


def job_threads(hydra_cfg: Any) -> int:
    """CPU threads for this job: its share of the cores when several local jobs run at once."""
    cores = cpu_count()
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        # at most `hydra.launcher.parallel` jobs at once, and never more than a sweeper batch
        widths = (hydra_cfg.launcher.get("parallel"), hydra_cfg.sweeper.get("max_batch_size"))
        return max(1, cores // min(int(w or cores) for w in widths))
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        # Slurm without CPU pinning (task/none, as on the local test cluster) still shows every core;
        # the allocation is what the task may use.
        return max(1, min(cores, int(os.environ["SLURM_CPUS_PER_TASK"])))
    return cores  # single run, or a pinned Slurm task: its affinity mask is its allocation


def resolved_config(cfg: DictConfig, hydra_cfg: Any) -> dict[str, Any]:
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as err:  # MissingMandatoryValue, InterpolationResolutionError …
        key = getattr(err, "full_key", None) or "config"
        from sweep.config import ConfigError  # sweep.config imports torch: only in the job

        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
    if container["train"].get("threads") is None:
        container["train"]["threads"] = job_threads(hydra_cfg)
    return container


def write_failure(run_dir: Path, reason: str) -> None:
    """The summary of a job that failed before or instead of training: nothing trained."""
    contract.write_summary(run_dir, contract.Summary(contract.SummaryStatus.FAILED, reason, tokens_seen=0,
                                                     wall_s=0.0, steps=0))


def _is_main_rank() -> bool:
    """Whether this process is rank 0 of its job (before torch.distributed is set up): the rank that writes
    the run dir, and so the one that holds its lock."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit

        return submitit.JobEnvironment().global_rank == 0
    return int(os.environ.get("RANK", "0")) == 0


def run_job(cfg: DictConfig) -> dict[str, Any]:
    import contextlib

    from sweep.contract import RunDirBusy, hold_run_dir

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        # held for the job's life, so a second submitter's job on this dir stops before reading or writing it
        with hold_run_dir(run_dir) if _is_main_rank() else contextlib.nullcontext():
            if multirun or not _is_main_rank():  # a sweep reports per run through its launcher
                return _train_in(cfg, hydra_cfg, run_dir, multirun)
            with Progress(run_dir) as progress:
                result = _train_in(cfg, hydra_cfg, run_dir, multirun)
            progress.finished(result)
            return result
    except RunDirBusy as err:
        # the dir belongs to the job that holds it: write nothing there (no failed summary)
        print(f"sweep: error: {err}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        return {"status": contract.RunOutcomeState.BUSY, "reason": str(err)}


def _train_in(cfg: DictConfig, hydra_cfg: Any, run_dir: Path, multirun: bool) -> dict[str, Any]:
    from sweep.config import ConfigError
    from sweep.train import EXIT_PREEMPTED, Preempted, train

    try:
        return train(resolved_config(cfg, hydra_cfg), run_dir)
    except ConfigError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        # in a sweep, one bad job must not abort the others: record it where `bitlaw status` looks
        if not (run_dir / contract.RUN).exists():
            write_failure(run_dir, f"config: {err}")
        return {"status": contract.SummaryStatus.FAILED, "reason": str(err)}
    except Preempted as stop:
        # the default run dir is a new timestamp per command: name this one, or a re-run would start over
        log.warning("%s; to resume: %s", stop, resume_command(run_dir) if not multirun else
                    "run the same command again")
        sys.exit(EXIT_PREEMPTED)
    except Exception as err:
        if not (run_dir / contract.SUMMARY).exists():
            write_failure(run_dir, f"{type(err).__name__}: {err}")
        raise


def resume_command(run_dir: Path, argv: list[str] | None = None) -> str:
    """This single run's command line, pinned to its run dir (hydra.run.dir), which resumes it.

    Quoted twice: for Hydra's override grammar (a dir with `=`, `,` or brackets is not a plain value) and
    then for the shell (spaces, quotes)."""
    import re

    argv = sys.argv[1:] if argv is None else argv
    args = [a for a in argv if not re.match(r"\+{0,2}hydra\.run\.dir=", a)]
    words = ["python", "-m", "sweep", *args, f"hydra.run.dir={hydra_value(str(run_dir))}"]
    return " ".join(shell_word(w) for w in words)


def shell_word(word: str) -> str:
    """`word` quoted for a POSIX shell: in double quotes when nothing in it is special there (easier to read
    around Hydra's single quotes than shlex's '"'"'), else shlex.quote."""
    if shlex.quote(word) == word or any(c in word for c in '"$`\\!'):
        return shlex.quote(word)
    return f'"{word}"'


def hydra_value(value: str) -> str:
    """`value` as Hydra's override parser reads back unchanged: as is when it is a plain string there, else
    single-quoted, with the backslashes before a quote (or the closing quote) doubled and quotes escaped."""
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        if OverridesParser.create().parse_override(f"k={value}").value() == value:
            return value
    except Exception:  # noqa: BLE001  (a grammar error: the value needs quoting)
        pass
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


class Progress:
    """What a single run (``python -m sweep``) prints on stdout: its run dir, a line every `every_s` seconds
    (step, tokens, loss, tokens/s, ETA), and its final loss. A thread reads the run dir's contract files
    (run.json for the step count, metrics.jsonl), so the training loop itself never prints."""

    def __init__(self, run_dir: Path, every_s: float = 5.0) -> None:
        import threading

        self.run_dir, self.every_s = run_dir, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="bitlaw-progress", daemon=True)
        self.last_step: int | None = None
        self.first: tuple[int, float] | None = None  # (step, time) of the first record this process saw

    def __enter__(self) -> Progress:
        print(f"[run] run dir {self.run_dir}", flush=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            line = self.line()
            if line:
                print(line, flush=True)

    def line(self) -> str | None:
        import time

        records, _ = contract.read_jsonl(self.run_dir / contract.METRICS)
        if not records or records[-1].get("step") == self.last_step:
            return None
        last = records[-1]
        step, now = int(last.get("step", 0)), time.monotonic()
        self.last_step = step
        if self.first is None:
            self.first = (step, now)
        total = (contract.read_json(self.run_dir / contract.RUN) or {}).get("steps")
        parts = [f"step {step}/{total}" if total else f"step {step}",
                 f"{float(last.get('tokens', 0)):,.0f} tokens",
                 f"loss {float(last.get('train_loss', 0)):.4f}"]
        if isinstance(last.get("tokens_per_s"), (int, float)):
            parts.append(f"{last['tokens_per_s']:,.0f} tokens/s")
        done_here = step - self.first[0]
        if total and done_here > 0:
            parts.append(f"ETA {(now - self.first[1]) / done_here * (int(total) - step):.0f} s")
        return "[run] " + " · ".join(parts)

    def finished(self, result: dict[str, Any]) -> None:
        loss = result.get("final_val_loss")
        shown = f"{loss:.4f}" if isinstance(loss, float) else str(loss)
        what = "already " + str(result.get("status")) if result.get("skipped") else str(result.get("status"))
        wall = f" in {result['wall_s']:.0f} s" if isinstance(result.get("wall_s"), float) else ""
        print(f"[run] {what}{wall}: final_val_loss {shown}  (run dir {self.run_dir})", flush=True)


# An absolute path: with `python -m sweep` a relative config_path would be looked up as a Python module.
CONF_DIR = str(contract.conf_dir())


def train_task(cfg: DictConfig) -> dict[str, Any]:
    """The task function Hydra runs per job (importable, so pickled by reference)."""
    return run_job(cfg)


main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(train_task)


def run_cli(hydra_main: Any = None) -> int:
    """``python -m sweep``: Hydra's own entry (``main``, reading sys.argv), except that a bad override or
    config prints one line naming it and exits 2 instead of Hydra's multi-line report and exit 1."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra re-raises instead of printing its own report when HYDRA_FULL_ERROR=1; a user's setting wins.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        (hydra_main or main)()
    except (HydraException, OmegaConfBaseException) as err:
        print(f"sweep: error: {error_line(err)}", file=sys.stderr)
        return 2
    return 0


def error_line(err: BaseException) -> str:
    """Hydra's composition error as one line: what it says, why (the OmegaConf error it wraps, e.g. a value
    of the wrong type), and for a misspelt key the nearest keys that exist."""
    import difflib
    import re

    text = " ".join(ln.strip() for ln in str(err).split("Config search path")[0].splitlines() if ln.strip())
    cause = err.__cause__
    if cause is None or not str(cause).strip():
        return text or type(err).__name__
    text = f"{text.rstrip('.')}: {str(cause).splitlines()[0].strip()}"
    parent, key, full_key = (getattr(cause, name, None) for name in ("parent_node", "key", "full_key"))
    if "not in struct" in str(cause) and parent is not None and isinstance(key, str) and full_key:
        close = difflib.get_close_matches(key, [str(k) for k in parent.keys()], n=3, cutoff=0.6)
        prefix = str(full_key)[: -len(key)]
        # the override's key may go deeper than the missing node (trian.lr: `trian` is missing)
        override = re.search(r"override '([^']+)'", str(err))
        suffix = override.group(1)[len(str(full_key)):] if override and \
            override.group(1).startswith(str(full_key)) else ""
        if close:
            text += f"; did you mean {' or '.join(prefix + c + suffix for c in close)}?"
    return text


if __name__ == "__main__":  # `python -m sweep.app`, same as `python -m sweep`
    raise SystemExit(run_cli())
