"""The run dir (design §3): atomic files, the run id, and the metrics log.

Every file is written to a temporary name in the same directory and renamed over the target, so a reader
(``bitlaw status``/``gather``) or a killed job never sees a half-written file. ``metrics.jsonl`` is appended
line by line (flushed); on resume it is cut back to the checkpoint's step so no step appears twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"
RUN = "run.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint"

# Keys that do not change what a run computes: where/how it runs and logs, not what it trains.
# (train.device stays out too: CPU and CUDA runs of one config are the same experiment.)
VOLATILE_KEYS = (
    "logger",
    "sweep",
    "train.device",
    "train.threads",
    "train.max_steps_this_run",
    "train.checkpoint_every",
    "train.checkpoint_every_s",
    "train.log_every",
    "train.keep_checkpoint",
    "train.save_export",
    "hydra",
)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or torn."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        return None


def drop_keys(config: dict, dotted_keys: tuple[str, ...]) -> dict:
    """A copy of a nested dict without the given dotted keys."""
    out = json.loads(json.dumps(config))
    for dotted in dotted_keys:
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def compute_run_id(resolved_config: dict) -> str:
    """16 hex chars of SHA-256 over the canonical JSON of the resolved config minus volatile keys."""
    canonical = json.dumps(drop_keys(resolved_config, VOLATILE_KEYS), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class MetricsLog:
    """metrics.jsonl: one JSON object per log step, appended and flushed as training goes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Keep only records with step <= `step` (what the checkpoint being resumed has seen)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill mid-write
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def append(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
