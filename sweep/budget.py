"""Will a job fit its GPU and finish in its Slurm time? The preflight's memory and time model, torch-free.

`bitlaw plan experiment=NAME` prints it per job (bitlaw/commands/plan.py) and a Slurm submission refuses a
grid it rejects before anything is queued (sweep.preflight.check_budget, from sweep.submission.validate_job).

Device memory per rank is counted term by term from the model's real shapes (sweep/model.py) and the loop as
it runs them (sweep/loop.py, sweep/train.py), in bytes:

- ``params`` 4·P, ``grads`` 4·P (fp32 master weights, P = every parameter), ``optimizer`` 8·P (AdamW m, v),
  ``ddp_buckets`` 0: DDP is built with ``gradient_as_bucket_view=True`` (the default kept a 4·P copy);
- ``ste_delta`` 4·N_quant once QAT is on (sweep/quant.py's fp32 q(w) − w buffer);
- ``weight_copies``: what forward keeps per weight for backward: on CUDA the bf16 cast of every matmul weight
  (2 B: block linears and head), on CPU the fp32 sum w + delta of every quantized linear (4 B);
- ``activations``: saved tensors per token and layer × layers × the micro-batch's tokens. Counted op by op:
  on CPU (fp32, eager) 11·d + 4·f elements (RMSNorm input, its normalised and scaled outputs twice; the
  rotated q, the repeated k and v, SDPA's output and its reshaped copy; SwiGLU's w1, silu, w3 and product),
  on CUDA eager (bf16 autocast, fp32 residual and norms) 36·d + 8·f bytes, compiled (inductor fuses the
  norms and casts and recomputes pointwise ops) 20·d + 6·f bytes, the upper end of the review's estimate;
- ``logits``: the head and loss at the start of backward: logits, fp32 log-softmax, its gradient and the
  logits' gradient: 16·V bytes per token of the micro-batch on CPU (all fp32), 14·V per token of one
  LOSS_CHUNK_TOKENS chunk on CUDA (bf16 logits; sweep/model.linear_cross_entropy);
- ``trunk_snapshot`` 12·P in a job with branches on a CPU device only (on CUDA the model and AdamW snapshot
  is a host copy, sweep/step.host_copy); ``resume_payload`` 0 (train.resume loads the checkpoint to the
  host and frees it once restored);
- ``runtime``: on CUDA 1 GB of context plus 10 % of the rest (allocator rounding, workspaces).

The peak is the larger of the activation peak (start of backward of a micro-batch: gradients held only when
micro-batches accumulate) and the optimizer step (all of P's state; CPU's foreach AdamW adds a temporary
4·P). tests/test_preflight_budget.py checks the CPU form against torch's profiler on CPU rungs (within 25 %).

Wall time: FLOPs per token as `bitlaw plan` costs a grid (fit/study/plan.py: 6·N_quant + 6·V·d + 6·L·T·d),
times the tokens the job trains (its trunk plus every branch's cooldown) plus its evaluations (forward only:
a third), at `mfu` of `peak_flops` per GPU on every GPU of the job; each Slurm attempt loses RESTART_S (the
checkpoint in the signal's delay, the requeue, the model built and compiled again).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sweep.contract import param_counts

GB = 1e9
DEFAULT_GPU_MEMORY = 80 * GB        # A100/H100 80GB: plan --gpu-memory, sweep.preflight.gpu_memory_gb
DEFAULT_MFU = 0.4                   # bitlaw plan --mfu
DEFAULT_PEAK_FLOPS = 989e12         # H100/H200 SXM dense bf16 (sweep/meters.py)
CUDA_CONTEXT = 1 * GB
CUDA_OVERHEAD = 0.10                # of the counted bytes: the allocator's rounding, cuBLAS workspaces
RESTART_S = 600.0                   # per Slurm attempt: checkpoint, requeue wait, rebuild and compile
LOSS_CHUNK_TOKENS = 4096           # rows of logits at once on CUDA (sweep/model.py reads it from here)
HOST_RUNTIME = 4 * GB               # per rank on the host: Python, torch, the CUDA libraries, data


@dataclass(frozen=True)
class Resources:
    """What a job asks Slurm for (`hydra.launcher` keys); timeout_min None: no time limit (a local run)."""

    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: float | None = None
    max_num_timeout: int = 0
    signal_delay_s: float = 120.0

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def time_limit_s(self) -> float | None:
        return None if self.timeout_min is None else self.timeout_min * 60 * (self.max_num_timeout + 1)


def job_launcher(launcher: Mapping[str, Any] | None, job: Mapping[str, Any]) -> dict[str, Any]:
    """The `hydra.launcher` keys one job is submitted with: the sweep's, then the job's own `sweep.slurm`
    (experiment=cluster's rungs size their resources there: one Slurm array per distinct set)."""
    own = (job.get("sweep") or {}).get("slurm") or {}
    return {**(launcher or {}), **own}


def resources(launcher: Mapping[str, Any] | None) -> Resources:
    """The Resources of `hydra.launcher` keys (the local launcher's give one process without a limit)."""
    launcher = launcher or {}
    known = {k: launcher[k] for k in Resources.__dataclass_fields__ if launcher.get(k) is not None}
    return Resources(**known)


@dataclass(frozen=True)
class Settings:
    """The check's knobs (a job's `sweep.preflight`; bitlaw plan's --gpu-memory, --mfu, --peak-flops)."""

    gpu_memory: float = DEFAULT_GPU_MEMORY
    mfu: float = DEFAULT_MFU
    peak_flops: float = DEFAULT_PEAK_FLOPS
    force: bool = False


def settings(job: Mapping[str, Any]) -> Settings:
    own = (job.get("sweep") or {}).get("preflight") or {}
    return Settings(float(own.get("gpu_memory_gb", DEFAULT_GPU_MEMORY / GB)) * GB,
                    float(own.get("mfu", DEFAULT_MFU)), float(own.get("peak_flops", DEFAULT_PEAK_FLOPS)),
                    bool(own.get("force", False)))


@dataclass
class JobBudget:
    """One job's preflight: the fields `bitlaw plan --json` prints under "jobs", with the fixes it needs."""

    name: str
    peak_memory_bytes: int
    memory_limit_bytes: int
    wall_s: float
    time_limit_s: float | None
    fits: bool
    finishes: bool
    host_memory_bytes: int = 0
    memory_terms: dict[str, int] = field(default_factory=dict)
    fixes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- memory


def activation_bytes_per_token_layer(d: int, f: int, n_heads: int, device: str, compiled: bool) -> float:
    """Saved-for-backward bytes per token per block (see the module docstring for the op-by-op count)."""
    if device != "cuda":
        return 4.0 * (11 * d + 4 * f + n_heads + 2)  # + SDPA's log-sum-exp and the two RMSNorm rsqrt
    return 20.0 * d + 6.0 * f if compiled else 36.0 * d + 8.0 * f + 4.0 * n_heads


def memory_terms(model: Mapping[str, Any], train: Mapping[str, Any], quant: Mapping[str, Any],
                 world_size: int, device: str, compiled: bool, micro_tokens: int) -> dict[str, int]:
    """Device bytes per rank by term at the larger of the activation and optimizer-step peaks (the term
    ``peak_phase`` is not bytes: 0 activation, 1 optimizer step); see the module docstring."""
    m = model
    counts = param_counts(m["d_model"], m["n_layers"], m["n_heads"], m["n_kv_heads"], m["ffn_dim"],
                          m["vocab_size"])
    p, n_quant = counts["N_total"], counts["N_quant"]
    d, layers, vocab = m["d_model"], m["n_layers"], m["vocab_size"]
    quantized = str(quant.get("format", "none")) != "none"
    cuda = device == "cuda"
    local_tokens = int(train["batch_tokens"]) // max(1, world_size)
    accumulating = micro_tokens < local_tokens
    static = {
        "params": 4 * p,
        "optimizer": 8 * p,
        # DDP's buckets are the gradients themselves (sweep/distributed.wrap: gradient_as_bucket_view)
        "ddp_buckets": 0,
        "ste_delta": 4 * n_quant if quantized else 0,
        # a branch's trunk snapshot and a resumed checkpoint live in host memory on CUDA (sweep/step.py
        # host_copy, train.resume loads to CPU); on a CPU device host memory is the device
        "trunk_snapshot": 12 * p if train.get("branches") and not cuda else 0,
        "resume_payload": 0,
    }
    per_token_layer = activation_bytes_per_token_layer(d, m["ffn_dim"], m["n_heads"], device, compiled)
    final_norm = 12 * d  # the last RMSNorm's input, normalised and scaled outputs: fp32 either way
    dynamic = {
        "grads": 4 * p if accumulating else 0,
        "weight_copies": 2 * (n_quant + vocab * d) if cuda else (4 * n_quant if quantized else 0),
        "activations": int(micro_tokens * (layers * per_token_layer + final_norm)),
        # CUDA: the head and loss run in LOSS_CHUNK_TOKENS-row chunks (sweep/model.linear_cross_entropy)
        "logits": (min(micro_tokens, LOSS_CHUNK_TOKENS) * vocab * 14) if cuda else micro_tokens * vocab * 16,
    }
    step = {"grads": 4 * p, "optimizer_temporaries": 0 if cuda else 4 * p}  # fused AdamW on CUDA
    activation_peak, step_peak = sum(dynamic.values()), sum(step.values())
    terms = {**static, **(dynamic if activation_peak >= step_peak else step)}
    if cuda:
        terms["runtime"] = int(CUDA_CONTEXT + CUDA_OVERHEAD * sum(terms.values()))
    return {k: int(v) for k, v in terms.items()}


def micro_tokens_of(train: Mapping[str, Any], world_size: int) -> int:
    """Tokens per forward/backward on one rank, as sweep/schedule.py splits the batch."""
    seq = int(train["seq_len"])
    local = int(train["batch_tokens"]) // seq // max(1, world_size)
    micro = int(train.get("micro_batch_tokens") or train["batch_tokens"]) // seq
    return max(1, min(local, micro)) * seq


def host_memory_bytes(model: Mapping[str, Any], tasks_per_node: int) -> int:
    """Host bytes per node: every rank builds the fp32 model on the host first (sweep/train.py), then runs."""
    m = model
    p = param_counts(m["d_model"], m["n_layers"], m["n_heads"], m["n_kv_heads"], m["ffn_dim"],
                     m["vocab_size"])["N_total"]
    return int(tasks_per_node * (4 * p + HOST_RUNTIME))


# ----------------------------------------------------------------------------- time


def flops_per_token(model: Mapping[str, Any], seq_len: int) -> float:
    """`bitlaw plan`'s cost per training token (fit/study/plan.py flops_per_token, Kaplan et al. 2020)."""
    m = model
    n_quant = param_counts(m["d_model"], m["n_layers"], m["n_heads"], m["n_kv_heads"], m["ffn_dim"],
                           m["vocab_size"])["N_quant"]
    return 6.0 * n_quant + 6.0 * m["vocab_size"] * m["d_model"] + 6.0 * m["n_layers"] * seq_len * m["d_model"]


def trained_tokens(train: Mapping[str, Any], n_quant: int) -> tuple[float, float]:
    """(tokens trained: the trunk plus each branch's cooldown, tokens evaluated) of one job."""
    batch = int(train["batch_tokens"])
    target = float(train["tokens"]) if train.get("tokens") is not None else \
        float(train["tokens_per_param"]) * n_quant
    steps = max(1, math.ceil(target / batch))
    decay = float(train.get("decay_fraction", 0.2))
    tokens = steps * batch
    segments = 1
    for budget in train.get("branches") or []:  # each branch trains its decay beyond its fork
        branch_steps = max(1, math.ceil(float(budget) / batch))
        tokens += math.ceil(decay * branch_steps) * batch
        segments += 1
    every = float(train.get("eval_every", 0.1))
    evals = (steps / every if every >= 1 else 1 / every) + int(train.get("final_evals", 3)) * segments
    return float(tokens), evals * int(train.get("eval_tokens", 0))


def wall_seconds(model: Mapping[str, Any], train: Mapping[str, Any], res: Resources, mfu: float,
                 peak_flops: float) -> float:
    """Seconds the job needs on its GPUs at `mfu`, with RESTART_S per Slurm attempt it takes."""
    m = model
    n_quant = param_counts(m["d_model"], m["n_layers"], m["n_heads"], m["n_kv_heads"], m["ffn_dim"],
                           m["vocab_size"])["N_quant"]
    tokens, eval_tokens = trained_tokens(train, n_quant)
    flops = flops_per_token(m, int(train["seq_len"])) * (tokens + eval_tokens / 3)
    compute = flops / (mfu * peak_flops * res.world_size)
    if res.timeout_min is None:
        return compute
    per_attempt = max(1.0, res.timeout_min * 60 - RESTART_S)
    return compute + math.ceil(compute / per_attempt) * RESTART_S


# ----------------------------------------------------------------------------- the job


def job_budget(name: str, job: Mapping[str, Any], res: Resources, gpu_memory: float = DEFAULT_GPU_MEMORY,
               mfu: float = DEFAULT_MFU, peak_flops: float = DEFAULT_PEAK_FLOPS) -> JobBudget:
    """The preflight of one job: `job` is its resolved config (model, quant, train sections)."""
    model, train, quant = job["model"], job["train"], job.get("quant") or {}
    device = "cuda" if train.get("device") == "cuda" else "cpu"
    compiled = train.get("compile") if train.get("compile") is not None else device == "cuda"
    micro = micro_tokens_of(train, res.world_size)
    terms = memory_terms(model, train, quant, res.world_size, device, bool(compiled), micro)
    peak = sum(terms.values())
    wall = wall_seconds(model, train, res, mfu, peak_flops)
    limit = res.time_limit_s
    fits = device != "cuda" or peak <= gpu_memory
    finishes = limit is None or wall <= limit
    budget = JobBudget(name, peak, int(gpu_memory), wall, limit, fits, finishes,
                       host_memory_bytes(model, res.tasks_per_node), terms)
    budget.fixes = fixes(budget, job, res, gpu_memory, mfu, peak_flops, bool(compiled))
    return budget


def fixes(budget: JobBudget, job: Mapping[str, Any], res: Resources, gpu_memory: float, mfu: float,
          peak_flops: float, compiled: bool) -> list[str]:
    """What to change, as overrides: a micro-batch that fits, or more GPUs or time to finish."""
    model, train, quant = job["model"], job["train"], job.get("quant") or {}
    out = []
    if not budget.fits:
        seq = int(train["seq_len"])
        micro = micro_tokens_of(train, res.world_size) // seq
        while micro > 1:
            micro //= 2
            terms = memory_terms(model, train, quant, res.world_size, "cuda", compiled, micro * seq)
            if sum(terms.values()) <= gpu_memory:
                out.append(f"train.micro_batch_tokens={micro * seq} (peak {sum(terms.values()) / GB:.1f} GB)")
                break
        else:
            out.append(f"a GPU with more than {budget.peak_memory_bytes / GB:.0f} GB: even one sequence per "
                       "micro-batch does not fit (data parallelism replicates the weights)")
    # a job that sizes its own resources (sweep.slurm, experiment=cluster's rungs) is fixed there
    key = "sweep.slurm" if (job.get("sweep") or {}).get("slurm") else "hydra.launcher"
    if not budget.finishes and budget.time_limit_s is not None:
        attempts = math.ceil(budget.wall_s / (res.timeout_min * 60)) if res.timeout_min else 1
        out.append(f"{key}.max_num_timeout={attempts} (or a longer timeout_min)")
        if res.gpus_per_node:
            nodes = math.ceil(res.nodes * budget.wall_s / budget.time_limit_s)
            out.append(f"{key}.nodes={nodes} (×{res.gpus_per_node} GPUs)")
    if job["train"].get("device") == "cuda" and res.mem_gb is not None \
            and budget.host_memory_bytes > res.mem_gb * GB:
        out.append(f"{key}.mem_gb={math.ceil(budget.host_memory_bytes / GB)} (host memory)")
    return out


def refusal(budgets: list[JobBudget]) -> str | None:
    """One line naming the first job that cannot fit or finish and its fix, with how many more; None if
    every job passes."""
    bad = [b for b in budgets if not (b.fits and b.finishes)]
    if not bad:
        return None
    b = bad[0]
    why = []
    if not b.fits:
        why.append(f"needs {b.peak_memory_bytes / GB:.1f} GB of GPU memory, over "
                   f"{b.memory_limit_bytes / GB:.0f}")
    if not b.finishes:
        why.append(f"needs {b.wall_s / 3600:.1f} h, over its {b.time_limit_s / 3600:.1f} h "
                   "(timeout_min × (max_num_timeout + 1))")
    more = f" ({len(bad) - 1} more job(s) too)" if len(bad) > 1 else ""
    return f"preflight: {b.name} {' and '.join(why)}; set {'; '.join(b.fixes) or 'more resources'}{more}"
