"""The job's typed config: dataclasses built from the resolved Hydra config, validated before training.

Every check raises ``ConfigError`` with one line naming the key and what is allowed; the app prints it
without a traceback and exits non-zero.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from sweep.contract import BITS_BY_FORMAT, FORMATS
from sweep.data import CORPORA, TOKEN_DTYPES, DataConfig, token_file_problem
from sweep.model import ModelConfig, param_counts
from sweep.quant import SCALES, QuantConfig
from sweep.wandb_logger import MODES, WandbConfig

DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("cosine", "wsd")


class ConfigError(ValueError):
    """Bad config value: the message is one line naming the key and the allowed values."""


@dataclass
class TrainConfig:
    tokens: int | None = None  # target tokens D; when null, tokens_per_param × N_quant
    tokens_per_param: float | None = 20.0
    batch_tokens: int = 4096  # global batch, split across ranks
    micro_batch_tokens: int | None = None  # per forward/backward; null = the rank's whole batch
    seq_len: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # final lr = lr × min_lr_ratio
    warmup: float = 0.05  # < 1: fraction of steps; >= 1: steps
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay)
    decay_fraction: float = 0.2  # wsd: the last share of steps that decays
    branches: list = field(default_factory=list)  # wsd: token budgets D_i < tokens, each a cooldown branch
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: float = 0.1  # < 1: fraction of steps; >= 1: steps
    eval_tokens: int = 8192  # the fixed validation set of the final evaluations
    mid_eval_tokens: int | None = None  # the curve's evaluations use its first this-many tokens (null: all)
    final_evals: int = 3  # final_val_loss = mean of the last k evaluations
    final_eval_spacing: float = 0.01  # the last k evaluations are this far apart (fraction or steps)
    diverge_loss: float | None = None  # train loss above this = diverged (default 1.5·ln(vocab))
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # CPU threads; null = this job's share of the cores (set by the app)
    log_every: int = 10
    checkpoint_every: int = 0  # steps; 0 = only on time, signal, and stop
    checkpoint_every_s: float = 600.0
    max_steps_this_run: int | None = None  # stop (and checkpoint) after this many steps of this process
    save_export: bool = True  # write export.pt with the packed weights
    keep_checkpoint: bool = False  # keep checkpoint/ (with the final state) after the run ends
    # Volatile keys (sweep.contract.VOLATILE_KEYS): how a run executes and meters, not what it trains, so
    # they stay out of the run id and adding them to conf/train/default.yaml kept every existing id.
    compile: bool | None = None  # torch.compile the blocks; null = on for CUDA, off on CPU
    peak_flops: float | None = None  # the device's peak FLOP/s for MFU; null = a known GPU's bf16 peak
    collective_timeout_s: float | None = None  # DDP: how long ranks wait for a peer; null = sized to a save


@dataclass
class JobConfig:
    model: ModelConfig
    quant: QuantConfig
    train: TrainConfig
    data: DataConfig
    wandb: WandbConfig
    sweep_name: str = "default"
    raw: dict[str, Any] = field(default_factory=dict)  # the resolved config as a plain dict


def _build(cls: type, section: dict[str, Any] | None, prefix: str) -> Any:
    section = dict(section or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    for key, value in section.items():
        _check_type(value, hints[key], f"{prefix}.{key}")
    return cls(**section)


def _check_type(value: Any, hint: Any, key: str) -> None:
    """Numbers and switches must be numbers and switches: a value such as `train.lr=abc` reaches the
    dataclass as a string and would otherwise fail later with a bare TypeError or ValueError."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    args = typing.get_args(hint) if union else (hint,)
    optional = type(None) in args
    if value is None:
        _require(optional, f"{key} must be set (null is not allowed)")
        return
    if bool in args:
        _require(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
    elif int in args or float in args:
        # int fields take floats too: token counts are written 1.5e9 and validated as numbers below
        _require(isinstance(value, (int, float)) and not isinstance(value, bool),
                 f"{key} must be a number{' or null' if optional else ''}, got {value!r}")


def from_dict(cfg: dict[str, Any], check_paths: bool = True) -> JobConfig:
    wandb_section = dict((cfg.get("logger") or {}).get("wandb") or {})
    if "tags" in wandb_section:
        wandb_section["tags"] = tuple(wandb_section["tags"] or ())
    job = JobConfig(
        model=_build(ModelConfig, cfg.get("model"), "model"),
        quant=_build(QuantConfig, cfg.get("quant"), "quant"),
        train=_build(TrainConfig, cfg.get("train"), "train"),
        data=_build(DataConfig, cfg.get("data"), "data"),
        wandb=_build(WandbConfig, wandb_section, "logger.wandb"),
        sweep_name=str((cfg.get("sweep") or {}).get("name", "default")),
        raw=cfg,
    )
    validate(job, check_paths)
    return job


FINITE_TRAIN_KEYS = ("tokens", "tokens_per_param", "lr", "warmup", "weight_decay", "min_lr_ratio",
                     "decay_fraction", "eval_every", "final_eval_spacing")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive_int(value: Any, key: str) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             f"{key} must be a positive integer, got {value!r}")


def validate(job: JobConfig, check_paths: bool = True) -> None:
    m, q, t, d = job.model, job.quant, job.train, job.data
    for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "max_seq_len"):
        _positive_int(getattr(m, key), f"model.{key}")
    _require(m.d_model % m.n_heads == 0, f"model.d_model ({m.d_model}) must be divisible by model.n_heads "
             f"({m.n_heads})")
    _require(m.n_heads % m.n_kv_heads == 0, f"model.n_heads ({m.n_heads}) must be divisible by "
             f"model.n_kv_heads ({m.n_kv_heads})")
    _require((m.d_model // m.n_heads) % 2 == 0, "model.d_model / model.n_heads must be even (rotary pairs)")

    _require(q.format in FORMATS, f"quant.format must be one of {', '.join(FORMATS)}, got {q.format!r}")
    allowed_bits = BITS_BY_FORMAT[q.format]
    _require(q.bits in allowed_bits, f"quant.bits must be one of {', '.join(map(str, allowed_bits))} for "
             f"quant.format={q.format}, got {q.bits!r}")
    _require(q.scale in SCALES, f"quant.scale must be one of {', '.join(SCALES)}, got {q.scale!r}")
    _positive_int(q.block_size, "quant.block_size")
    if q.format != "none":
        for key in ("d_model", "ffn_dim"):  # the in_features of the block linears
            _require(getattr(m, key) % q.block_size == 0, f"quant.block_size ({q.block_size}) must divide "
                     f"model.{key} ({getattr(m, key)}), the in_features of the quantized linears")
    _require(q.qat_start >= 0, f"quant.qat_start must be a fraction in [0, 1) or a step count >= 1, "
             f"got {q.qat_start!r}")
    _require(q.refresh_every >= 0, f"quant.refresh_every must be >= 0 (0 = never), got {q.refresh_every!r}")

    _require(t.tokens is not None or t.tokens_per_param is not None,
             "train.tokens or train.tokens_per_param must be set")
    # inf passes every "> 0" below: 1e400 tokens overflowed int() in the job, lr=inf trained to a divergence
    for key in FINITE_TRAIN_KEYS:
        value = getattr(t, key)
        _require(value is None or math.isfinite(float(value)),
                 f"train.{key} must be a finite number, got {value!r}")
    _require(isinstance(t.seed, int) and not isinstance(t.seed, bool) and t.seed >= 0,
             f"train.seed must be an integer >= 0 (numpy's generators refuse negatives), got {t.seed!r}")
    if t.tokens is not None:
        _require(float(t.tokens) > 0, f"train.tokens must be > 0, got {t.tokens!r}")
    if t.tokens_per_param is not None:
        _require(t.tokens_per_param > 0, f"train.tokens_per_param must be > 0, got {t.tokens_per_param!r}")
    _positive_int(t.seq_len, "train.seq_len")
    _positive_int(t.batch_tokens, "train.batch_tokens")
    # a step trains a whole batch: a target below one batch would silently train batch_tokens instead
    if t.tokens is not None:
        _require(float(t.tokens) >= t.batch_tokens, f"train.tokens ({t.tokens}) must be >= "
                 f"train.batch_tokens ({t.batch_tokens}), the tokens of one step; raise it or lower "
                 "train.batch_tokens")
    elif t.tokens_per_param is not None:
        target = t.tokens_per_param * param_counts(m)["N_quant"]
        _require(target >= t.batch_tokens, f"train.tokens_per_param ({t.tokens_per_param}) × N_quant gives "
                 f"{target:.0f} tokens, less than train.batch_tokens ({t.batch_tokens}), one step")
    _require(t.seq_len <= m.max_seq_len, f"train.seq_len ({t.seq_len}) must be <= model.max_seq_len "
             f"({m.max_seq_len})")
    _require(t.batch_tokens % t.seq_len == 0, f"train.batch_tokens ({t.batch_tokens}) must be a multiple of "
             f"train.seq_len ({t.seq_len})")
    if t.micro_batch_tokens is not None:
        _positive_int(t.micro_batch_tokens, "train.micro_batch_tokens")
        _require(t.micro_batch_tokens % t.seq_len == 0,
                 f"train.micro_batch_tokens ({t.micro_batch_tokens}) must be a multiple of train.seq_len "
                 f"({t.seq_len})")
    _require(t.lr > 0, f"train.lr must be > 0, got {t.lr!r}")
    _require(t.warmup >= 0, f"train.warmup must be >= 0 (a fraction of the steps < 1, or a step count >= 1), "
             f"got {t.warmup!r}")
    _require(t.weight_decay >= 0, f"train.weight_decay must be >= 0 (0 = none), got {t.weight_decay!r}")
    for key in ("beta1", "beta2"):  # AdamW refuses these only when the job builds its optimizer
        _require(0 <= getattr(t, key) < 1, f"train.{key} must be in [0, 1), got {getattr(t, key)!r}")
    _require(t.grad_clip > 0, f"train.grad_clip must be > 0 (the largest gradient norm), got {t.grad_clip!r}")
    _require(0 <= t.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio!r}")
    _require(t.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(SCHEDULES)}, got "
             f"{t.schedule!r}")
    _require(0 < t.decay_fraction <= 1, f"train.decay_fraction must be in (0, 1], got {t.decay_fraction!r}")
    _require(t.eval_every > 0, f"train.eval_every must be > 0, got {t.eval_every!r}")
    _positive_int(t.eval_tokens, "train.eval_tokens")
    _positive_int(t.final_evals, "train.final_evals")
    _require(t.final_eval_spacing > 0, f"train.final_eval_spacing must be > 0, got {t.final_eval_spacing!r}")
    _positive_int(t.log_every, "train.log_every")
    _require(t.device in DEVICES, f"train.device must be one of {', '.join(DEVICES)}, got {t.device!r}")
    if t.threads is not None:
        _positive_int(t.threads, "train.threads")
    if t.max_steps_this_run is not None:
        _positive_int(t.max_steps_this_run, "train.max_steps_this_run")
    if t.peak_flops is not None:
        _require(t.peak_flops > 0, f"train.peak_flops must be > 0 (FLOP/s), got {t.peak_flops!r}")
    if t.collective_timeout_s is not None:
        _require(t.collective_timeout_s > 0, "train.collective_timeout_s must be > 0 (seconds) or null, got "
                 f"{t.collective_timeout_s!r}")

    _require(d.corpus in CORPORA, f"data.corpus must be one of {', '.join(CORPORA)}, got {d.corpus!r}")
    _require(0 < d.val_fraction < 1, f"data.val_fraction must be in (0, 1), got {d.val_fraction!r}")
    if d.corpus == "stdlib":
        _require(m.vocab_size >= 256, f"model.vocab_size must be >= 256 for data.corpus=stdlib (bytes), "
                 f"got {m.vocab_size}")
    else:
        _require(d.dtype in TOKEN_DTYPES,
                 f"data.dtype must be one of {', '.join(TOKEN_DTYPES)}, got {d.dtype!r}")
        _require(bool(d.path), "data.path must name a token file when data.corpus=tokens")
        if check_paths:  # its size only: the pass over its ids is sweep/preflight.py's, once per sweep
            problem = token_file_problem(d, t.seq_len)
            _require(problem is None, str(problem))
    _require(job.wandb.mode in MODES, f"logger.wandb.mode must be one of {', '.join(MODES)}, got "
             f"{job.wandb.mode!r}")


def resolve_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; allowed here: auto, cpu")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1
