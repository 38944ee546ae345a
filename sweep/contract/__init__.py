"""The run-dir contract: the one thing the training half (sweep/) and the analysis half (fit/)
share, in code. Standard library only (no torch, no Hydra), so fit/ and the CLI import it cheaply; import
its names from here (`from sweep.contract import SUMMARY`), not from its modules.

What lives here, and nowhere else:
- files: the file names of a run dir and of a sweep dir's ledger (`.bitlaw/`); how files are written (temp
  file + fsync + rename) and read back (a missing, torn or non-object file reads as None, never as an
  exception); the walk that finds run dirs;
- lock: the run dir's lock (one live training job per run dir);
- states: the words for how a run stands (summary statuses, how training ended, run outcomes);
- summary: the `Summary` record, the one shape of summary.json;
- identity: the run id and its volatile keys (which also name the overrides left out of a run dir's name);
- ledger: the submission record (`Submission`) and the Slurm job states;
- install: where the installed configs are (conf/, package data of sweep) and bitlaw's version;
- bits: formats and bit widths, the storage bits per weight (P_w) and the parameter counts by role that the
  memory model needs;
- family: the CPU ladder's rule, width -> model shape (the demo's grid and contenders).
"""


from sweep.contract.bits import (
    BF16_BITS,
    BIT_WIDTHS,
    BITS_BY_FORMAT,
    CODE_BITS,
    FORMATS,
    QUANT_FORMATS,
    SCALE_BITS,
    Format,
    bits_per_weight,
    param_counts,
    parameter_roles,
)
from sweep.contract.family import (
    LADDER_KEYS,
    LADDER_STEP,
    ladder_name,
    ladder_shape,
    ladder_widths,
)
from sweep.contract.files import (
    BRANCHES_DIR,
    CHECKPOINT,
    CONFIG,
    CONFIG_JSON,
    CONFIGS_DIR,
    EXPORT,
    HYDRA_CONFIG,
    JOBS_FILE,
    LEDGER_DIR,
    LOCK_FILE,
    METRICS,
    NOT_RUN_DIRS,
    OUTCOMES_FILE,
    RUN,
    SUMMARY,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_jsonl,
    walk_run_dirs,
)
from sweep.contract.identity import (
    DIRNAME_ONLY_KEYS,
    OPTIONAL_KEYS,
    VOLATILE_KEYS,
    compute_run_id,
    drop_keys,
    is_volatile,
    volatile_overrides,
)
from sweep.contract.install import (
    bitlaw_version,
    conf_dir,
)
from sweep.contract.ledger import (
    SLURM_LIVE,
    SLURM_PENDING,
    SLURM_RUNNING,
    SLURM_UNFINISHED,
    Submission,
    append_submissions,
    config_snapshot_path,
    latest_submissions,
    ledger_dir,
    slurm_state_word,
)
from sweep.contract.lock import (
    RunDirBusy,
    hold_run_dir,
    lock_holder,
)
from sweep.contract.states import (
    SKIPPED_STATUSES,
    RunOutcomeState,
    SummaryStatus,
    TrainingEnd,
    Vocabulary,
)
from sweep.contract.summary import (
    Summary,
    write_summary,
)

__all__ = [
    "BF16_BITS", "BITS_BY_FORMAT", "BIT_WIDTHS", "BRANCHES_DIR", "CHECKPOINT", "CODE_BITS", "CONFIG",
    "CONFIGS_DIR", "CONFIG_JSON", "DIRNAME_ONLY_KEYS", "EXPORT", "FORMATS", "Format", "HYDRA_CONFIG",
    "JOBS_FILE", "LADDER_KEYS", "LADDER_STEP", "LEDGER_DIR", "LOCK_FILE", "METRICS", "NOT_RUN_DIRS",
    "OPTIONAL_KEYS", "OUTCOMES_FILE", "QUANT_FORMATS", "RUN", "RunDirBusy", "RunOutcomeState", "SCALE_BITS",
    "SKIPPED_STATUSES", "SLURM_LIVE", "SLURM_PENDING", "SLURM_RUNNING", "SLURM_UNFINISHED", "SUMMARY",
    "Submission", "Summary", "SummaryStatus", "TrainingEnd", "VOLATILE_KEYS", "Vocabulary",
    "append_submissions", "atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "bitlaw_version", "bits_per_weight", "compute_run_id", "conf_dir", "config_snapshot_path", "drop_keys",
    "hold_run_dir", "is_volatile", "ladder_name", "ladder_shape", "ladder_widths", "latest_submissions",
    "ledger_dir", "lock_holder", "param_counts", "parameter_roles", "read_json", "read_jsonl",
    "slurm_state_word", "volatile_overrides", "walk_run_dirs", "write_summary",
]
