"""One QAT training job: `train(cfg, run_dir) -> dict` (nothing runs at import time).

The job is idempotent on its run dir: a completed run with the same run_id returns at once, a checkpoint
of the same run_id is resumed, a different run_id in the dir is refused. Training is AdamW with warmup +
cosine (or WSD), grad clipping, delayed QAT (unquantized until ``quant.qat_start``, codebooks fitted at the
switch), evaluation on a fixed validation set, and final loss = mean of the last k evaluations.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from sweep import branches as branching
from sweep import checkpoint, contract, data, distributed, export, meters, quant
from sweep.config import ConfigError, JobConfig, default_threads, from_dict, resolve_device
from sweep.contract import (
    CHECKPOINT,
    METRICS,
    RUN,
    SUMMARY,
    atomic_write_json,
    compute_run_id,
    read_json,
)
from sweep.loop import (
    Outcome,
    Segment,
    Trainer,
    evaluation_steps,
    final_evaluation_steps,
    final_loss,
    steps_from,
)
from sweep.model import Llama, param_counts
from sweep.rundir import MetricsLog, write_config
from sweep.wandb_logger import WandbLogger

log = logging.getLogger("sweep.train")
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpointed after a stop signal; run again to resume


class Preempted(Exception):
    """A stop signal arrived; a checkpoint was written and the process should exit for requeue."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint written")
        self.signum = signum


class StopSignals:
    """Turn SIGUSR2/SIGTERM into a flag checked at step boundaries (checkpoint first, then exit/requeue).

    The handlers that were installed before (submitit's requeue handler) are kept and called after the
    checkpoint is saved, so submitit still requeues the job.
    """

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        with contextlib.suppress(ValueError):  # not the main thread: signals cannot be caught here
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def hand_over(self) -> None:
        """After checkpointing: let the previous handler act (submitit requeues), else ask for an exit."""
        signum = self.received
        previous = self.previous.get(signum)
        if callable(previous):
            self.__exit__()
            previous(signum, None)  # submitit: requeue and exit; its SIGTERM handler just logs and returns
            self.received = None
            return
        raise Preempted(signum)


class TrainJob:
    """`train(cfg, run_dir)` as a checkpointable callable for plain submitit (``executor.submit(job)``).

    On preemption or timeout submitit calls ``checkpoint()`` (after our SIGUSR2 handling has saved the
    training checkpoint) and requeues the same call, which resumes from the run dir. Under Hydra the
    hydra-submitit launcher plays this role itself.
    """

    def __init__(self, cfg: dict[str, Any], run_dir: str | Path):
        self.cfg, self.run_dir = cfg, str(run_dir)

    def __call__(self) -> dict[str, Any]:
        return train(self.cfg, self.run_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.cfg, self.run_dir))


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def job_ids() -> dict[str, str | None]:
    return {"slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "submitit_job_id": os.environ.get("SUBMITIT_JOB_ID")}


def check_run_dir(run_dir: Path, run_id: str) -> str:
    """'skip' (completed/diverged), 'resume' (checkpoint of this run) or 'fresh'; refuse other runs' dirs."""
    existing = read_json(run_dir / RUN)
    if existing is not None and existing.get("run_id") != run_id:
        raise ConfigError(f"run dir {run_dir} holds run_id {existing.get('run_id')} but this config is "
                          f"{run_id}; use another hydra.run.dir (never overwritten)")
    summary = read_json(run_dir / SUMMARY)
    # completed and diverged are final (training is deterministic: a diverged run would diverge again);
    # a failed run (an exception, a killed node) runs again, from its checkpoint when it has one
    if existing is not None and summary is not None and summary.get("status") in ("completed", "diverged"):
        return "skip"
    if existing is not None and checkpoint.exists(run_dir / CHECKPOINT):
        return "resume"
    return "fresh"


def train(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Run (or resume, or skip) one job; returns the summary dict (status, final_val_loss, …)."""
    job = from_dict(cfg)
    run_dir = Path(run_dir)
    run_id = compute_run_id(cfg)
    mode = check_run_dir(run_dir, run_id)
    if mode == "skip":
        log.info("skip: already %s (%s)", read_json(run_dir / SUMMARY)["status"], run_dir)
        return {**read_json(run_dir / SUMMARY), "run_id": run_id, "skipped": True}

    device_type = resolve_device(job.train.device)
    torch.set_num_threads(job.train.threads or default_threads())
    dist_info = distributed.init(device_type)
    device = torch.device("cuda", dist_info.local_rank) if device_type == "cuda" else torch.device("cpu")
    try:
        result = _run(job, run_dir, run_id, mode, device, dist_info)
    except BaseException:
        distributed.shutdown(dist_info, wait_for_peers=False)  # a peer may never reach a barrier now
        raise
    distributed.shutdown(dist_info)
    return result


def _run(job: JobConfig, run_dir: Path, run_id: str, mode: str, device: torch.device,
         dist_info: distributed.DistInfo) -> dict[str, Any]:
    m, q, t = job.model, job.quant, job.train
    started = time.time()
    corpus = data.load_corpus(job.data)
    counts = param_counts(m)
    if t.tokens is not None:
        target_tokens = int(float(t.tokens))
    else:  # tokens per *quantized* parameter: N_quant is the law's N (design §4)
        target_tokens = int(t.tokens_per_param * counts["N_quant"])
    total_steps = max(1, math.ceil(target_tokens / t.batch_tokens))
    n_sequences = t.batch_tokens // t.seq_len
    if n_sequences % dist_info.world_size:
        raise ConfigError(f"train.batch_tokens / train.seq_len ({n_sequences} sequences) must be divisible "
                          f"by the number of ranks ({dist_info.world_size})")
    local_sequences = n_sequences // dist_info.world_size
    micro_sequences = min(local_sequences, max(1, (t.micro_batch_tokens or t.batch_tokens) // t.seq_len))
    qat_step = steps_from(q.qat_start, total_steps) if q.format != "none" else None
    if qat_step is not None and qat_step >= total_steps:
        raise ConfigError(f"quant.qat_start ({q.qat_start}) is step {qat_step}, but the run has only "
                          f"{total_steps} steps: QAT would never start; lower it or train longer")
    warmup = max(1, steps_from(t.warmup, total_steps))
    plan = branch_plan(job)
    try:
        final_val = data.validation_windows(corpus, max(1, t.eval_tokens // t.seq_len), t.seq_len)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    # mid-run evaluations (the curve) on a fixed subset: cheap; the final ones on the whole set: quiet
    mid_windows = max(1, (t.mid_eval_tokens or t.eval_tokens) // t.seq_len)
    val = (final_val[0][:mid_windows], final_val[1][:mid_windows])

    torch.manual_seed(t.seed)
    model = Llama(m).to(device)
    quantized = quant.prepare(model, q)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.dim() >= 2 and "tok_embeddings" not in name else no_decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=t.lr, betas=(t.beta1, t.beta2), fused=device.type == "cuda")
    if t.compile if t.compile is not None else device.type == "cuda":
        compile_blocks(model)
    trainable = model
    if dist_info.enabled:
        trainable = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def autocast() -> Any:
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    run_info = {
        "run_id": run_id, "format": q.format, "bits": q.bits,
        "quantizer": quant.quantizer_kind(q.format, q.bits),
        "P_w": quant.bits_per_weight(q.format, q.bits, q.block_size, q.binary_mean), **counts,
        "D": total_steps * t.batch_tokens,
        "steps": total_steps, "qat_start_step": qat_step, "seed": t.seed, "git_sha": git_sha(),
        "bitlaw_version": contract.bitlaw_version(),  # names the code where there is no git checkout
        "corpus": corpus.description, "corpus_sha256": corpus.sha256, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "host": platform.node(), **job_ids(),
        "sweep": job.sweep_name, "device": device.type, "world_size": dist_info.world_size,
        "threads": torch.get_num_threads(),
    }
    if plan:
        run_info.update(trunk=run_id, branches=[b.name for b in plan],
                        tokens_trained=branching.trained_tokens(total_steps, t.batch_tokens, plan),
                        tokens_as_separate_runs=branching.separate_tokens(total_steps, t.batch_tokens, plan))
    metrics = MetricsLog(run_dir / METRICS)
    progress: dict[str, Any] = {"evals": [], "wall_s": 0.0}
    start_step = 0
    if mode == "resume":
        payload = checkpoint.load(run_dir / CHECKPOINT, map_location=device)
        checkpoint.restore(payload, model=model, optimizer=optimizer)
        start_step, progress = payload["step"], payload["progress"]
        run_info = {**read_json(run_dir / RUN), **job_ids(), "host": platform.node()}
        log.info("resume: %s from step %d%s", run_id, start_step,
                 f" (branch {progress['branch']['name']})" if progress.get("branch") else "")
    resume_branch = progress.pop("branch", None)
    if dist_info.is_main:
        write_config(run_dir, job.raw)
        (run_dir / SUMMARY).unlink(missing_ok=True)  # a failed attempt's summary: this one is running
        if mode == "resume":
            # inside a branch the trunk stopped at the fork: its log ends there
            metrics.truncate_after(resume_branch["trunk_step"] if resume_branch else start_step)
        else:
            metrics.path.unlink(missing_ok=True)
            shutil.rmtree(run_dir / branching.BRANCHES_DIR, ignore_errors=True)  # a fresh trunk's branches
        atomic_write_json(run_dir / RUN, run_info)
    logger = WandbLogger(job.wandb, run_dir, run_id, job.sweep_name, job.raw) if dist_info.is_main else None
    trunk = Segment(total_steps, evaluation_steps(total_steps, t), metrics, progress["evals"])

    def save_checkpoint(done: int, branch: dict | None) -> None:
        if dist_info.is_main:
            wall = progress["wall_s"] + (time.time() - started)
            state = {**progress, "evals": trunk.evals, "wall_s": wall}
            if branch is not None:  # inside a branch: `done` is the branch's step, the trunk is at the fork
                state["branch"] = {**branch, "trunk_step": trainer.branch_segment.branch.fork_step}
            checkpoint.save(run_dir / CHECKPOINT, model=model, optimizer=optimizer, run_id=run_id,
                            step=done, progress=state)

    def write_branch(branch: branching.Branch, segment: Segment, outcome: Outcome, wall_s: float) -> None:
        if not dist_info.is_main:
            return
        branch_dir = trainer.branch_dir(branch)
        config = branching.standalone_config(job.raw, branch)
        branch_id = compute_run_id(config)
        final, final_se, n_final = final_loss(segment.evals, segment.eval_at, t.final_evals)
        completed = outcome.status == "completed"
        info = {**run_info, "run_id": branch_id, "trunk": run_id, "branch": branch.name,
                "fork_step": branch.fork_step, "D": branch.steps * t.batch_tokens, "steps": branch.steps}
        for key in ("branches", "tokens_trained", "tokens_as_separate_runs"):
            info.pop(key, None)
        if completed:
            info["export"] = export.export(model, quantized, q, counts, branch_dir if t.save_export else None)
        write_config(branch_dir, config)
        atomic_write_json(branch_dir / RUN, info)
        atomic_write_json(branch_dir / SUMMARY, {
            "status": outcome.status, "final_val_loss": final if completed else None,
            "final_val_loss_se": final_se if completed else None,
            "tokens_seen": outcome.done * t.batch_tokens,
            "wall_s": wall_s, "reason": outcome.reason, "steps": outcome.done, "final_evals": n_final,
            "trunk": run_id, "branch": branch.name})
        log.info("branch %s: %s, final_val_loss %s", branch.name, outcome.status, final)

    def on_stop(done: int) -> None:
        log.warning("checkpointed at step %d after signal %s", done, trainer.stop.received)

    with StopSignals() as stop:
        trainer = Trainer(
            job=job, run_dir=run_dir, run_id=run_id, model=model, trainable=trainable, optimizer=optimizer,
            quantized=quantized, corpus=corpus, val=val, final_val=final_val, device=device,
            dist_info=dist_info, autocast=autocast, total_steps=total_steps, warmup=warmup, qat_step=qat_step,
            n_sequences=n_sequences, micro_sequences=micro_sequences, plan=plan, logger=logger,
            started=started, stop=stop,
            hooks=SimpleNamespace(save_checkpoint=save_checkpoint, write_branch=write_branch,
                                  on_stop=on_stop),
            meter=meters.Meter(meters.model_flops_per_token(m, t.seq_len), device,
                               meters.peak_flops(device, t.peak_flops)))
        outcome = trainer.run(trunk, start_step, resume_branch)
    if outcome.status == "stopped":
        log.info("stopped after %d steps this run (train.max_steps_this_run); checkpoint at %d",
                 trainer.steps_this_run, outcome.done)
        if logger:
            logger.finish({}, exit_code=0)
        return {"status": "stopped", "step": outcome.done, "run_id": run_id}

    status, reason, done = outcome.status, outcome.reason, outcome.done
    wall_s = progress["wall_s"] + (time.time() - started)
    final, final_se, n_final = final_loss(trunk.evals, trunk.eval_at, t.final_evals)
    completed = status == "completed"
    summary = {"status": status, "final_val_loss": final if completed else None,
               "final_val_loss_se": final_se if completed else None, "tokens_seen": done * t.batch_tokens,
               "wall_s": wall_s, "reason": reason, "steps": done, "final_evals": n_final}
    if plan:
        summary["trunk"] = run_id
        summary["branches"] = {b.name: (read_json(trainer.branch_dir(b) / SUMMARY) or {}).get("status")
                               for b in plan}
    if dist_info.is_main:
        if completed:
            export_dir = run_dir if t.save_export else None
            run_info["export"] = export.export(model, quantized, q, counts, export_dir)
            atomic_write_json(run_dir / RUN, run_info)
        if completed and t.keep_checkpoint:
            save_checkpoint(done, None)  # the final latent weights and optimizer, to continue training
        atomic_write_json(run_dir / SUMMARY, summary)
        if not t.keep_checkpoint:
            # the run is final; a cluster-scale checkpoint (fp32 weights + Adam moments) is 16 bytes per
            # parameter, and export.pt already holds the weights as they would be stored
            shutil.rmtree(run_dir / CHECKPOINT, ignore_errors=True)
        if logger:
            logger.finish(summary, exit_code=0 if completed else 1)
    return {**summary, "run_id": run_id}


def compile_blocks(model: Llama) -> None:
    """torch.compile each transformer block in place (``nn.Module.compile``): parameter names and state
    dicts stay those of the plain model, so checkpoints, DDP and the export are unchanged. The delayed QAT
    switch flips a Python flag on the QuantLinears, which the compiled code guards on: it recompiles once
    at the switch (and once for evaluation under no_grad), within dynamo's cache limit."""
    for layer in model.layers:
        layer.compile()


def branch_plan(job: JobConfig) -> list[branching.Branch]:
    """The job's branches (sweep/branches.py), with the checks that need the run's step counts."""
    t, q = job.train, job.quant
    try:
        plan = branching.plan_branches(t, q.format, q.qat_start)
    except branching.BranchError as err:
        raise ConfigError(str(err)) from None
    for branch in plan:
        tail = final_evaluation_steps(branch.steps, t)
        if tail and min(tail) <= branch.fork_step:
            raise ConfigError(f"train.final_eval_spacing: the last {t.final_evals} evaluations of branch "
                              f"{branch.name} start at step {min(tail)}, before its decay (from step "
                              f"{branch.fork_step}); lower train.final_eval_spacing or train.final_evals")
        if q.format != "none" and int(q.qat_start) >= branch.steps:
            raise ConfigError(f"quant.qat_start ({q.qat_start}) is not before the end of branch "
                              f"{branch.name} ({branch.steps} steps): QAT would never start in it")
    return plan
