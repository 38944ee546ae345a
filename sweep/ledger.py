"""The sweep dir's record of submissions: `SWEEP_DIR/.bitlaw/`.

`python -m sweep.submit` writes here; `bitlaw status` (fit/status.py) reads it. fit/ may not import
sweep/, so the format is the contract, restated in fit/status.py:

- `jobs.jsonl`: one JSON object per submitted job, appended at submission (a re-sweep appends again; the
  last line for a run dir wins): `run` (run dir relative to the sweep dir), `job_id` (Slurm id, `123_4`
  for array task 4, or a local pid), `executor` (slurm|local), `submitted` (UTC ISO time), `stdout`,
  `stderr` (submitit's log files, relative to the sweep dir), `config` (the composed-config snapshot,
  relative to the sweep dir), `overrides` (list of str).
- `configs/<run>.yaml`: the composed config of each job as it was at launch (what the job runs).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

LEDGER_DIR = ".bitlaw"
JOBS_FILE = "jobs.jsonl"
CONFIGS_DIR = "configs"


@dataclass
class Submission:
    run: str
    job_id: str
    executor: str
    submitted: str
    stdout: str
    stderr: str
    config: str
    overrides: list[str] = field(default_factory=list)


def ledger_dir(sweep_dir: Path) -> Path:
    return sweep_dir / LEDGER_DIR


def config_snapshot_path(sweep_dir: Path, run: str) -> Path:
    # override_dirname values may contain '/', e.g. data.corpus=/x/y.bin; keep one flat file per run
    return ledger_dir(sweep_dir) / CONFIGS_DIR / (run.replace(os.sep, "%2F") + ".yaml")


def append_submissions(sweep_dir: Path, submissions: list[Submission]) -> None:
    """Append in one write so that a concurrent reader never sees half of a batch's lines."""
    path = ledger_dir(sweep_dir) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(asdict(s), sort_keys=True) + "\n" for s in submissions)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def latest_submissions(sweep_dir: Path) -> dict[str, Submission]:
    """run -> its most recent submission (a re-sweep re-submits failed runs; the newest line wins)."""
    path = ledger_dir(sweep_dir) / JOBS_FILE
    latest: dict[str, Submission] = {}
    if not path.exists():
        return latest
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            latest[record["run"]] = Submission(**record)
    return latest


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
