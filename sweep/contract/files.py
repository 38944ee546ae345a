"""The run dir's file names, how they are written (temp file + fsync + rename) and read back (a missing,
torn or non-object file reads as None, never as an exception), and the walk that finds run dirs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- file names
CONFIG = "config.yaml"        # the resolved config of the run
CONFIG_JSON = "config.json"   # the same config as JSON: what gather reads (YAML construction was 55 % of it)
RUN = "run.json"              # identity, written at start (run_id, format, bits, P_w, counts, D, seed, ...)
METRICS = "metrics.jsonl"     # one JSON object per log step
SUMMARY = "summary.json"      # written last: status completed | diverged | failed, final_val_loss, ...
CHECKPOINT = "checkpoint"     # resume state, while the run is unfinished
EXPORT = "export.pt"          # packed n-bit codes, bf16 scales, centroids
BRANCHES_DIR = "branches"     # RUN_DIR/branches/<D>/: one run dir per WSD cooldown branch (sweep/branches.py)
LOCK_FILE = ".train.lock"     # held by the training job (`hold_run_dir`); says who holds it
HYDRA_CONFIG = os.path.join(".hydra", "config.yaml")  # Hydra's composed copy, if the job died before CONFIG

# The ledger of a sweep dir: SWEEP_DIR/.bitlaw/jobs.jsonl (submissions), .bitlaw/configs/<run>.yaml (the
# frozen configs) and .bitlaw/outcomes.jsonl (one line per run outcome, appended as runs end).
LEDGER_DIR = ".bitlaw"
JOBS_FILE = "jobs.jsonl"
CONFIGS_DIR = "configs"
OUTCOMES_FILE = "outcomes.jsonl"

# Directories below a sweep dir that never hold run dirs (besides every hidden one, such as .bitlaw).
NOT_RUN_DIRS = frozenset({"wandb", CHECKPOINT, "__pycache__"})


# ----------------------------------------------------------------------------- writing and reading
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp file name beside `path`, for writers that want a name (pandas, matplotlib). When the block
    ends without error the file is fsynced and renamed over `path`, so a reader or a killed writer never
    sees half a file and a machine crash never leaves a renamed-but-empty one; on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(path)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_beside(path: Path) -> Path:
    """Create an empty, unique temp file beside ``path`` with the mode a plain ``open`` gives: 0666 less the
    umask (and a directory's default ACL), which the kernel applies to ``os.open``'s mode.  tempfile.mkstemp
    made every run.json, summary.json, export.pt, runs.csv and fit.json 0600, so teammates on a shared
    cluster could not gather each other's sweeps; reading the umask instead (os.umask sets it to read it)
    would race with other threads."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temp file name beside {path}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 2, allow_nan: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, allow_nan=allow_nan) + "\n")


def read_json(path: str | Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable, torn or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: str | Path) -> tuple[list[dict], int]:
    """(records, number of unreadable lines) of a JSON-lines file; a torn last line (a job killed
    mid-write) or junk lines are counted, not raised. A missing file is ([], 0)."""
    records: list[dict] = []
    bad = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(record, dict):
                    records.append(record)
                else:
                    bad += 1
    except OSError:
        return [], 0
    return records, bad


# ----------------------------------------------------------------------------- finding run dirs
def walk_run_dirs(root: Path, markers: Sequence[str] = (RUN,), include_root: bool = True) -> list[Path]:
    """Every directory under `root` holding one of `markers`, sorted; hidden dirs (.submitit, .bitlaw,
    .hydra) and the wandb, checkpoint and __pycache__ trees are not entered."""
    root = Path(root)
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in NOT_RUN_DIRS)
        if any(m in files for m in markers) and (include_root or Path(current) != root):
            found.append(Path(current))
    return found
