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
- bits: formats and bit widths, the storage bits per weight (P_w) and the parameter counts by role that the
  memory model needs.
"""

from sweep.contract.bits import (
    BF16_BITS as BF16_BITS,
)
from sweep.contract.bits import (
    BIT_WIDTHS as BIT_WIDTHS,
)
from sweep.contract.bits import (
    BITS_BY_FORMAT as BITS_BY_FORMAT,
)
from sweep.contract.bits import (
    CODE_BITS as CODE_BITS,
)
from sweep.contract.bits import (
    FORMATS as FORMATS,
)
from sweep.contract.bits import (
    QUANT_FORMATS as QUANT_FORMATS,
)
from sweep.contract.bits import (
    SCALE_BITS as SCALE_BITS,
)
from sweep.contract.bits import (
    Format as Format,
)
from sweep.contract.bits import (
    bits_per_weight as bits_per_weight,
)
from sweep.contract.bits import (
    param_counts as param_counts,
)
from sweep.contract.bits import (
    parameter_roles as parameter_roles,
)
from sweep.contract.files import (
    BRANCHES_DIR as BRANCHES_DIR,
)
from sweep.contract.files import (
    CHECKPOINT as CHECKPOINT,
)
from sweep.contract.files import (
    CONFIG as CONFIG,
)
from sweep.contract.files import (
    CONFIG_JSON as CONFIG_JSON,
)
from sweep.contract.files import (
    CONFIGS_DIR as CONFIGS_DIR,
)
from sweep.contract.files import (
    EXPORT as EXPORT,
)
from sweep.contract.files import (
    HYDRA_CONFIG as HYDRA_CONFIG,
)
from sweep.contract.files import (
    JOBS_FILE as JOBS_FILE,
)
from sweep.contract.files import (
    LEDGER_DIR as LEDGER_DIR,
)
from sweep.contract.files import (
    LOCK_FILE as LOCK_FILE,
)
from sweep.contract.files import (
    METRICS as METRICS,
)
from sweep.contract.files import (
    NOT_RUN_DIRS as NOT_RUN_DIRS,
)
from sweep.contract.files import (
    OUTCOMES_FILE as OUTCOMES_FILE,
)
from sweep.contract.files import (
    RUN as RUN,
)
from sweep.contract.files import (
    SUMMARY as SUMMARY,
)
from sweep.contract.files import (
    atomic_path as atomic_path,
)
from sweep.contract.files import (
    atomic_write_bytes as atomic_write_bytes,
)
from sweep.contract.files import (
    atomic_write_json as atomic_write_json,
)
from sweep.contract.files import (
    atomic_write_text as atomic_write_text,
)
from sweep.contract.files import (
    read_json as read_json,
)
from sweep.contract.files import (
    read_jsonl as read_jsonl,
)
from sweep.contract.files import (
    walk_run_dirs as walk_run_dirs,
)
from sweep.contract.identity import (
    DIRNAME_ONLY_KEYS as DIRNAME_ONLY_KEYS,
)
from sweep.contract.identity import (
    OPTIONAL_KEYS as OPTIONAL_KEYS,
)
from sweep.contract.identity import (
    VOLATILE_KEYS as VOLATILE_KEYS,
)
from sweep.contract.identity import (
    compute_run_id as compute_run_id,
)
from sweep.contract.identity import (
    drop_keys as drop_keys,
)
from sweep.contract.identity import (
    is_volatile as is_volatile,
)
from sweep.contract.identity import (
    volatile_overrides as volatile_overrides,
)
from sweep.contract.ledger import (
    SLURM_LIVE as SLURM_LIVE,
)
from sweep.contract.ledger import (
    SLURM_PENDING as SLURM_PENDING,
)
from sweep.contract.ledger import (
    SLURM_RUNNING as SLURM_RUNNING,
)
from sweep.contract.ledger import (
    SLURM_UNFINISHED as SLURM_UNFINISHED,
)
from sweep.contract.ledger import (
    Submission as Submission,
)
from sweep.contract.ledger import (
    append_submissions as append_submissions,
)
from sweep.contract.ledger import (
    config_snapshot_path as config_snapshot_path,
)
from sweep.contract.ledger import (
    latest_submissions as latest_submissions,
)
from sweep.contract.ledger import (
    ledger_dir as ledger_dir,
)
from sweep.contract.ledger import (
    slurm_state_word as slurm_state_word,
)
from sweep.contract.lock import (
    RunDirBusy as RunDirBusy,
)
from sweep.contract.lock import (
    hold_run_dir as hold_run_dir,
)
from sweep.contract.lock import (
    lock_holder as lock_holder,
)
from sweep.contract.states import (
    SKIPPED_STATUSES as SKIPPED_STATUSES,
)
from sweep.contract.states import (
    RunOutcomeState as RunOutcomeState,
)
from sweep.contract.states import (
    SummaryStatus as SummaryStatus,
)
from sweep.contract.states import (
    TrainingEnd as TrainingEnd,
)
from sweep.contract.states import (
    Vocabulary as Vocabulary,
)
from sweep.contract.summary import (
    Summary as Summary,
)
from sweep.contract.summary import (
    write_summary as write_summary,
)
