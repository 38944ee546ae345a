"""The run id: a hash of the resolved config minus the keys that do not change what a run computes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

# Keys (dotted prefixes) that do not change what a run computes: where and how it runs and logs, not what it
# trains. (train.device too: CPU and CUDA runs of one config are the same experiment.) They are left out of
# the run id, and overrides of them are left out of the run dir's name (`volatile_overrides`).
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
    "train.compile",  # how the step runs (like train.device): compiled and eager train the same experiment
    "train.peak_flops",  # only the MFU meter reads it
    "train.collective_timeout_s",  # how long DDP ranks wait for each other
    "hydra",
)
# Keys added after runs existed, whose empty value (null, []) means what the runs did before the key existed:
# left out of the run id while empty, so older runs keep their ids.
OPTIONAL_KEYS = ("train.branches", "train.mid_eval_tokens")
# Config-group selections that never appear in the resolved config (their contents do, key by key).
DIRNAME_ONLY_KEYS = ("experiment",)


def is_volatile(key: str) -> bool:
    """Whether a dotted config key is (inside) a volatile key."""
    key = key.lstrip("+~")
    return any(key == v or key.startswith(v + ".") for v in VOLATILE_KEYS)


def volatile_overrides(overrides: Iterable[str]) -> list[str]:
    """The keys of `overrides` (Hydra `key=value` strings) that stay out of a run dir's name: the volatile
    ones and the experiment selection. Feeds `hydra.job.config.override_dirname.exclude_keys`."""
    keys = []
    for override in overrides:
        key = str(override).split("=", 1)[0].lstrip("+~")  # Hydra matches the key without its +/~ prefix
        if is_volatile(key) or key in DIRNAME_ONLY_KEYS:
            keys.append(key)
    return keys


def drop_keys(config: dict, dotted_keys: Sequence[str]) -> dict:
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


def _lookup(config: dict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def compute_run_id(resolved_config: dict) -> str:
    """16 hex chars of SHA-256 over the canonical JSON of the resolved config minus volatile keys (and
    optional keys left empty)."""
    empty = [key for key in OPTIONAL_KEYS if _lookup(resolved_config, key) in (None, [], ())]
    canonical = json.dumps(drop_keys(resolved_config, (*VOLATILE_KEYS, *empty)), sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
