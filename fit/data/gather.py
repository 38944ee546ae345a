"""Run dirs -> one runs table (the run-dir contract, sweep/contract.py).

A run dir is any directory holding ``run.json`` under a sweep dir (walked recursively by the run-dir
contract, sweep/contract/: hidden, ``wandb`` and ``checkpoint`` trees are skipped). One row per run; only
runs whose ``summary.json`` says ``completed`` become rows unless ``include_all``. Files are read as JSON
and YAML (PyYAML's safe loader, its C build when present) only; nothing is ever
unpickled, so a run dir from an untrusted cluster cannot
execute code here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fit.errors import InputError
from sweep import contract

# libyaml's safe loader builds the same plain data ~10x faster than the pure-Python one: config.yaml parsing
# was most of a 10k-run gather.  Both construct only plain types (never objects).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MISMATCHED = "mismatched"  # Skipped.status of a run dir whose run.json is another run's
N_COLUMNS = {"quant": "N_quant", "nonembed": "N_nonembed", "total": "N_total"}
LEADING = [
    "run",
    "format",
    "bits",
    "P",
    "N",
    "D",
    "loss",
    "N_total",
    "N_nonembed",
    "N_quant",
    "N_hp",
    "status",
    "sweep",
    "run_dir",
]


@dataclass
class Skipped:
    run_dir: Path
    status: str  # diverged | failed | running | unreadable | mismatched
    reason: str


@dataclass
class Gathered:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_run_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) that holds a run.json, in sorted order."""
    return contract.walk_run_dirs(root, (contract.RUN,))


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{"model": {"d_model": 64}} -> {"model.d_model": 64}; lists become JSON strings (one cell each)."""
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def read_metrics(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """metrics.jsonl, tolerating a torn last line or junk lines (a job killed mid-write): warn, keep rest."""
    records, bad = contract.read_jsonl(path)
    if bad:
        warnings.append(f"{path}: skipped {bad} unreadable line(s) of metrics.jsonl; kept {len(records)}")
    return records


def _last_val_loss(records: list[dict[str, Any]]) -> float | None:
    for record in reversed(records):
        value = record.get("val_loss")
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _identity_mismatch(meta: dict[str, Any], config: dict[str, Any] | None) -> str | None:
    """Why run.json does not belong to this run dir's config.yaml (the resolved config its job wrote), or
    None. A copied or stale run.json would otherwise put this run's loss under another run's identity."""
    run_id = meta.get("run_id")
    if not config or not isinstance(run_id, str):
        return None  # nothing to check against (a job that died before writing config.yaml)
    expected = contract.compute_run_id(config)
    if run_id == expected:
        return None
    return (f"run.json says run_id {run_id} but config.yaml gives {expected}: run.json belongs to another "
            "run; move this dir aside and re-run its sweep to train it again")


def read_config(run_dir: Path, warnings: list[str]) -> tuple[dict[str, Any], Path | None]:
    """The run's resolved config and the file it came from: config.json (jobs since 2026-12-02 write it
    beside config.yaml; JSON parses ~20x faster than YAML is constructed), else config.yaml (older run
    dirs), else Hydra's composed copy (a job that died before writing either); ({}, None) without any."""
    json_path = run_dir / contract.CONFIG_JSON
    if json_path.is_file():
        loaded = contract.read_json(json_path)
        if loaded is not None:
            return loaded, json_path
        warnings.append(f"{json_path}: unreadable, torn or not a JSON object; read config.yaml instead")
    for path in (run_dir / contract.CONFIG, run_dir / contract.HYDRA_CONFIG):
        if not path.is_file():
            continue
        try:
            loaded = yaml.load(path.read_text(), Loader=SAFE_LOADER)  # a safe loader: plain data only
        except (OSError, yaml.YAMLError) as err:
            warnings.append(f"{path}: unreadable ({str(err).splitlines()[0]}); config columns empty")
            return {}, path
        return (loaded if isinstance(loaded, dict) else {}), path
    return {}, None


def read_run(run_dir: Path, sweep: Path, n_convention: str, result: Gathered, include_all: bool) -> None:
    """Append the run's row to ``result.rows``, or record why it is skipped."""
    meta = contract.read_json(run_dir / contract.RUN)
    if meta is None:
        result.skipped.append(Skipped(run_dir, "unreadable",
                                      "run.json: unreadable, torn or not a JSON object"))
        return
    summary_path = run_dir / contract.SUMMARY
    if summary_path.is_file():
        summary = contract.read_json(summary_path)
        if summary is None:
            result.skipped.append(Skipped(run_dir, "unreadable",
                                          "summary.json: unreadable, torn or not a JSON object"))
            return
    else:
        summary = {"status": "running", "reason": "no summary.json yet (running, pending or killed)"}
    status = str(summary.get("status", "unknown"))
    records = read_metrics(run_dir / contract.METRICS, result.warnings)
    if status != contract.SummaryStatus.COMPLETED:
        result.skipped.append(Skipped(run_dir, status, str(summary.get("reason") or "no reason recorded")))
        if not include_all:
            return
    config, config_path = read_config(run_dir, result.warnings)
    own = config_path is not None and config_path.name in (contract.CONFIG, contract.CONFIG_JSON)
    mismatch = _identity_mismatch(meta, config if own else None)
    if mismatch:
        # never a row, even with --all: its numbers would be filed under another run's id, format and bits
        result.skipped.append(Skipped(run_dir, MISMATCHED, mismatch))
        return
    loss = summary.get("final_val_loss")
    # a NaN or a string passed the old isinstance test: a "completed" row with no loss, counted as completed
    if status == contract.SummaryStatus.COMPLETED and not _finite_number(loss):
        stored = "no final_val_loss" if loss is None else f"final_val_loss {loss!r}, not a finite number"
        loss = _last_val_loss(records)
        result.warnings.append(
            f"{run_dir}: summary.json has {stored}; used the last val_loss of metrics.jsonl ({loss})"
        )
    row: dict[str, Any] = {
        "run": meta.get("run_id", run_dir.name),
        "format": meta.get("format"),
        "bits": meta.get("bits"),
        "P": meta.get("P_w"),
        "N": meta.get(N_COLUMNS[n_convention]),
        "D": summary.get("tokens_seen", meta.get("D")),
        "loss": loss,
        "N_total": meta.get("N_total"),
        "N_nonembed": meta.get("N_nonembed"),
        "N_quant": meta.get("N_quant"),
        "N_hp": meta.get("N_hp"),
        "status": status,
        "sweep": str(sweep),
        "run_dir": str(run_dir),
        "reason": summary.get("reason"),
        "wall_s": summary.get("wall_s"),
        "seed": meta.get("seed"),
        # a branch of a WSD trunk (sweep/branches.py) names its trunk; any other run is its own trunk
        "trunk": meta.get("trunk", meta.get("run_id", run_dir.name)),
        "branch": meta.get("branch"),
        "final_val_loss_se": summary.get("final_val_loss_se"),
        "git_sha": meta.get("git_sha"),
        "n_metrics": len(records),
        "last_val_loss": _last_val_loss(records),
    }
    for key, value in flatten(config).items():
        row.setdefault(key, value)
    result.rows.append(row)


def gather(sweep_dirs: list[str | Path], n_convention: str = "quant", include_all: bool = False) -> Gathered:
    """Read every run dir under ``sweep_dirs``; see module docstring."""
    if n_convention not in N_COLUMNS:
        raise InputError(f"--n-convention: {n_convention!r} is not allowed; allowed: {', '.join(N_COLUMNS)}")
    result = Gathered()
    for sweep in map(Path, sweep_dirs):
        if not sweep.is_dir():
            raise InputError(f"SWEEP_DIR {sweep}: not a directory")
        run_dirs = find_run_dirs(sweep)
        if not run_dirs:
            result.warnings.append(f"{sweep}: no run dirs (no run.json below it)")
        for run_dir in run_dirs:
            read_run(run_dir, sweep, n_convention, result, include_all)
    return result


def to_frame(rows: list[dict[str, Any]]):
    """Rows -> a DataFrame with the contract columns first, then the rest sorted (config keys)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in LEADING:
        if column not in frame:
            frame[column] = None
    rest = sorted(c for c in frame.columns if c not in LEADING)
    return frame[LEADING + rest]
