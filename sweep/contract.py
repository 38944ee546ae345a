"""The run-dir contract (design §3): the one thing the training half (sweep/) and the analysis half (fit/)
share, in code. Standard library only (no torch, no Hydra), so fit/ and the CLI import it cheaply.

What lives here, and nowhere else:
- the file names of a run dir and of a sweep dir's submission ledger (`.bitlaw/`);
- how files are written (temp file + fsync + rename) and read back (a missing, torn or non-object file reads
  as None, never as an exception);
- the run id and its volatile keys (which also name the overrides left out of a run dir's name);
- the ledger record (`Submission`), the Slurm job states, and the walk that finds run dirs;
- the storage bits per weight (P_w) and the parameter counts by role that the memory model needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
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
HYDRA_CONFIG = os.path.join(".hydra", "config.yaml")  # Hydra's composed copy, if the job died before CONFIG

# Summary statuses. A run is done only when its summary says completed.
COMPLETED, FAILED, DIVERGED = "completed", "failed", "diverged"
FINAL_STATUSES = (COMPLETED, FAILED, DIVERGED)

# The submission ledger of a sweep dir: SWEEP_DIR/.bitlaw/jobs.jsonl and .bitlaw/configs/<run>.yaml.
LEDGER_DIR = ".bitlaw"
JOBS_FILE = "jobs.jsonl"
CONFIGS_DIR = "configs"

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


# ----------------------------------------------------------------------------- run identity
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


# ----------------------------------------------------------------------------- the submission ledger
@dataclass
class Submission:
    """One line of SWEEP_DIR/.bitlaw/jobs.jsonl, appended at submission (the last line for a run wins).

    `run` is the run dir relative to the sweep dir; `job_id` a Slurm id (`123_4` for array task 4) or a
    local pid; `executor` slurm | local; `stdout`, `stderr` and `config` (the frozen composed config) are
    relative to the sweep dir.
    """

    run: str
    job_id: str
    executor: str
    submitted: str
    stdout: str
    stderr: str
    config: str
    overrides: list[str] = field(default_factory=list)


def ledger_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / LEDGER_DIR


def config_snapshot_path(sweep_dir: Path, run: str) -> Path:
    # override_dirname values may contain '/', e.g. data.path=/x/y.bin; keep one flat file per run
    return ledger_dir(sweep_dir) / CONFIGS_DIR / (run.replace(os.sep, "%2F") + ".yaml")


def append_submissions(sweep_dir: Path, submissions: Sequence[Submission]) -> None:
    """Append in one write, fsynced, so that a concurrent reader never sees half of a batch's lines."""
    path = ledger_dir(sweep_dir) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(asdict(s), sort_keys=True) + "\n" for s in submissions)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def latest_submissions(sweep_dir: Path) -> dict[str, Submission]:
    """run -> its most recent submission (a re-sweep re-submits failed runs; the newest line wins).
    Lines that are torn or lack a field are ignored."""
    records, _ = read_jsonl(ledger_dir(sweep_dir) / JOBS_FILE)
    names = {f.name for f in fields(Submission)}
    latest: dict[str, Submission] = {}
    for record in records:
        try:
            submission = Submission(**{k: v for k, v in record.items() if k in names})
        except TypeError:
            continue
        submission.job_id = str(submission.job_id)
        latest[submission.run] = submission
    return latest


# ----------------------------------------------------------------------------- Slurm job states
# Waiting for resources (squeue/sacct words).
SLURM_PENDING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED"})
# Holding resources. COMPLETING says only that the job is ending (sacct then says how).
SLURM_RUNNING = frozenset({"RUNNING", "COMPLETING", "RESIZING", "STAGE_OUT", "SIGNALING"})
# A job in one of these states still holds or waits for resources: re-submitting its run would duplicate it.
SLURM_LIVE = SLURM_PENDING | SLURM_RUNNING
# A job that may still produce a result: live, or in submitit's watcher states before the scheduler has a
# final word (READY, UNKNOWN) or about to be requeued (PREEMPTED).
SLURM_UNFINISHED = SLURM_LIVE | {"READY", "UNKNOWN", "PREEMPTED"}


def slurm_state_word(state: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED'."""
    return state.split()[0] if state.strip() else ""


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


# ----------------------------------------------------------------------------- bits and parameters
SCALE_BITS = 16  # block scales (and binary's block means) are stored as bf16
BF16_BITS = 16


def bits_per_weight(format: str, bits: int, block_size: int = 64, binary_mean: bool = False,
                    scale_bits: int = SCALE_BITS) -> float:
    """P_w: storage bits per quantized weight = code bits + the bf16 block metadata spread over its block.

    Format `none` (or 16 bits) is plain bf16. Ternary codes {-1, 0, 1} take 2 bits. 1-bit uniform is
    binary; with `binary_mean` binary also stores one block mean. Per-tensor k-means centroid tables (2^n
    values per linear) are not per weight and are left out here (the export counts them).
    """
    if format == "none" or bits == BF16_BITS:
        return float(BF16_BITS)
    if format == "ternary":
        return 2.0 + scale_bits / block_size
    if format == "binary" or (format == "uniform" and bits == 1):
        return 1.0 + (2 if binary_mean else 1) * scale_bits / block_size
    return float(bits) + scale_bits / block_size


def param_counts(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, ffn_dim: int,
                 vocab_size: int) -> dict[str, int]:
    """Parameters by role of the Llama-style decoder (no biases, SwiGLU, GQA, untied head), closed form.

    N_quant: the block linears wq, wo (d×d), wk, wv (d×kv·head_dim), w1, w3 (d×ffn), w2 (ffn×d): what QAT
    quantizes. N_hp: token embedding + output head + every RMSNorm weight (kept in bf16).
    """
    roles = parameter_roles(d_model, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size)
    n_quant, n_hp = roles["quant"], roles["embed"] + roles["norm"]
    return {"N_total": n_quant + n_hp, "N_nonembed": n_quant + roles["norm"], "N_quant": n_quant,
            "N_hp": n_hp}


def parameter_roles(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, ffn_dim: int,
                    vocab_size: int) -> dict[str, int]:
    """The three disjoint roles: quant (block linears), embed (token embedding + untied output head) and
    norm (two RMSNorm weights per layer and the final one)."""
    kv_dim = n_kv_heads * (d_model // n_heads)
    return {"quant": n_layers * (2 * d_model * d_model + 2 * d_model * kv_dim + 3 * d_model * ffn_dim),
            "embed": 2 * vocab_size * d_model, "norm": (2 * n_layers + 1) * d_model}


# ----------------------------------------------------------------------------- the installation

def conf_dir() -> Path:
    """The Hydra config tree (conf/), found one way wherever bitlaw runs: package data of ``sweep``.

    conf/ stays at the top of the repository; sweep/conf is a link to it, which a wheel ships as files, so a
    checkout, an editable install and an installed wheel all read it here (the app, `bitlaw plan`, and
    ``--arch bitlaw`` through fit/). Resolved, so a checkout names its top-level conf/.
    """
    from importlib.resources import files

    return Path(str(files(__package__ or "sweep") / "conf")).resolve()


def bitlaw_version() -> str | None:
    """The installed bitlaw distribution's version (what runs and reports record where there is no git
    checkout to name the code), or None when the code runs from a tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bitlaw")
    except PackageNotFoundError:
        return None
