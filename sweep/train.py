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
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sweep import checkpoint, data, distributed, export, quant
from sweep.config import ConfigError, JobConfig, default_threads, from_dict, resolve_device
from sweep.contract import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    RUN,
    SUMMARY,
    atomic_write_json,
    atomic_write_text,
    compute_run_id,
    read_json,
)
from sweep.model import Llama, param_counts
from sweep.rundir import MetricsLog
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


def steps_from(value: float, total: int) -> int:
    """A config value that is a fraction of the run (< 1) or a step count (>= 1)."""
    return int(round(value * total)) if value < 1 else int(value)


def evaluation_steps(total: int, cfg: Any) -> set[int]:
    """Steps (1-based, after the update) with a validation pass: every ``eval_every`` for the curve, plus
    the final ``final_evals`` steps spaced ``final_eval_spacing`` apart, whose mean is the final loss (the
    tail of the schedule, where the loss is flat, rather than points spread over the last 20 % of the run).
    """
    every = max(1, steps_from(cfg.eval_every, total))
    gap = max(1, steps_from(cfg.final_eval_spacing, total))
    tail = {total - i * gap for i in range(cfg.final_evals) if total - i * gap >= 1}
    return set(range(every, total + 1, every)) | tail


def learning_rate(step: int, total: int, warmup: int, cfg: Any) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay_start = total - max(1, int(round(cfg.decay_fraction * total)))
        if step < decay_start:
            return cfg.lr
        progress = (step - decay_start) / max(1, total - decay_start)
        return cfg.lr - (cfg.lr - floor) * progress
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


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


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: tuple[torch.Tensor, torch.Tensor], device: torch.device,
             autocast: Any, batch: int) -> float:
    model.eval()
    inputs, targets = val
    total, count = 0.0, 0
    for start in range(0, len(inputs), batch):
        x, y = inputs[start: start + batch].to(device), targets[start: start + batch].to(device)
        with autocast():
            logits = model(x)
        total += float(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum"))
        count += y.numel()
    model.train()
    return total / count


def forward_backward(trainable: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, micro: int,
                     autocast: Any) -> float:
    """Accumulate the gradient of the mean loss over this rank's batch, `micro` sequences at a time.

    DDP all-reduces only on the last micro-batch (``no_sync`` before), once per optimizer step.
    """
    # x, y: (B_local, T)
    starts = list(range(0, len(x), micro))
    total = torch.zeros((), device=x.device)
    for index, start in enumerate(starts):
        xb, yb = x[start: start + micro], y[start: start + micro]
        last = index == len(starts) - 1
        sync = contextlib.nullcontext() if last or not hasattr(trainable, "no_sync") else trainable.no_sync()
        with sync:
            with autocast():
                logits = trainable(xb)  # (b, T, vocab)
            loss = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten()) * (len(xb) / len(x))
            loss.backward()
        total += loss.detach()
    return float(total)


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
    try:
        val = data.validation_windows(corpus, max(1, t.eval_tokens // t.seq_len), t.seq_len)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    warmup = max(1, steps_from(t.warmup, total_steps))
    eval_at = evaluation_steps(total_steps, t)

    torch.manual_seed(t.seed)
    model = Llama(m).to(device)
    quantized = quant.prepare(model, q)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.dim() >= 2 and "tok_embeddings" not in name else no_decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=t.lr, betas=(t.beta1, t.beta2), fused=device.type == "cuda")
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
        "corpus": corpus.description, "corpus_sha256": corpus.sha256, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "host": platform.node(), **job_ids(),
        "sweep": job.sweep_name, "device": device.type, "world_size": dist_info.world_size,
        "threads": torch.get_num_threads(),
    }
    metrics = MetricsLog(run_dir / METRICS)
    progress: dict[str, Any] = {"evals": [], "wall_s": 0.0}
    start_step = 0
    if mode == "resume":
        payload = checkpoint.load(run_dir / CHECKPOINT, map_location=device)
        checkpoint.restore(payload, model=model, optimizer=optimizer)
        start_step, progress = payload["step"], payload["progress"]
        run_info = {**read_json(run_dir / RUN), **job_ids(), "host": platform.node()}
        log.info("resume: %s from step %d", run_id, start_step)
    if dist_info.is_main:
        atomic_write_text(run_dir / CONFIG, OmegaConf.to_yaml(OmegaConf.create(job.raw)))
        (run_dir / SUMMARY).unlink(missing_ok=True)  # a failed attempt's summary: this one is running
        if mode == "resume":
            metrics.truncate_after(start_step)
        else:
            metrics.path.unlink(missing_ok=True)
        atomic_write_json(run_dir / RUN, run_info)
    logger = WandbLogger(job.wandb, run_dir, run_id, job.sweep_name, job.raw) if dist_info.is_main else None

    diverge_loss = t.diverge_loss or 1.5 * math.log(m.vocab_size)
    last_checkpoint_time, interval_train_s, interval_tokens = time.time(), 0.0, 0
    steps_this_run, status, reason = 0, "completed", None
    step = start_step

    def save_checkpoint(done_steps: int) -> None:
        if dist_info.is_main:
            wall = progress["wall_s"] + (time.time() - started)
            checkpoint.save(run_dir / CHECKPOINT, model=model, optimizer=optimizer, run_id=run_id,
                            step=done_steps, progress={**progress, "wall_s": wall})

    with StopSignals() as stop:
        for step in range(start_step, total_steps):
            step_started = time.time()
            if qat_step is not None and step == qat_step:
                quant.switch_on(quantized, q, t.seed)
            elif qat_step is not None and q.refresh_every and step > qat_step \
                    and (step - qat_step) % q.refresh_every == 0:
                quant.refresh(quantized, q, t.seed)
            lr = learning_rate(step, total_steps, warmup, t)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = data.train_batch(corpus, t.seed, step, n_sequences, t.seq_len, dist_info.rank,
                                    dist_info.world_size)
            local_loss = forward_backward(trainable, x.to(device), y.to(device), micro_sequences, autocast)
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            done = step + 1
            steps_this_run += 1
            interval_tokens += t.batch_tokens
            train_loss = distributed.all_reduce_mean(local_loss, dist_info, device)
            interval_train_s += time.time() - step_started
            evaluate_now = done in eval_at
            record: dict[str, Any] = {"step": done, "tokens": done * t.batch_tokens, "train_loss": train_loss,
                                      "lr": lr, "phase": "qat" if qat_step is not None and step >= qat_step
                                      else "warmup"}
            if evaluate_now:
                val_loss = evaluate(model, val, device, autocast, micro_sequences)
                record["val_loss"] = val_loss
                progress["evals"].append([done, val_loss])
            if not math.isfinite(train_loss) or train_loss > diverge_loss:
                status = "diverged"
                reason = f"train loss {train_loss:.4g} at step {done} (limit {diverge_loss:.3g})"
            if done % t.log_every == 0 or evaluate_now or status != "completed":
                # training throughput: update steps only, evaluation time excluded
                record["tokens_per_s"] = interval_tokens / max(interval_train_s, 1e-9)
                interval_train_s, interval_tokens = 0.0, 0
                if dist_info.is_main:
                    metrics.append(record)
                    if logger:
                        logger.log(record, step=done)
            if status != "completed":
                break

            stop_now = distributed.any_rank(stop.received is not None, dist_info, device)
            limit_reached = t.max_steps_this_run is not None and steps_this_run >= t.max_steps_this_run \
                and done < total_steps
            periodic = (t.checkpoint_every and done % t.checkpoint_every == 0) or \
                (time.time() - last_checkpoint_time >= t.checkpoint_every_s)
            if (stop_now or limit_reached or periodic) and done < total_steps:
                save_checkpoint(done)
                last_checkpoint_time = time.time()
            if stop_now and stop.received is not None:
                log.warning("checkpointed at step %d after signal %s", done, stop.received)
                stop.hand_over()
            if limit_reached:
                log.info("stopped after %d steps this run (train.max_steps_this_run); checkpoint at %d",
                         steps_this_run, done)
                if logger:
                    logger.finish({}, exit_code=0)
                return {"status": "stopped", "step": done, "run_id": run_id}

    wall_s = progress["wall_s"] + (time.time() - started)
    last_evals = [v for _, v in progress["evals"][-t.final_evals:]]
    final = sum(last_evals) / len(last_evals) if last_evals and status == "completed" else None
    summary = {"status": status, "final_val_loss": final, "tokens_seen": (step + 1) * t.batch_tokens,
               "wall_s": wall_s, "reason": reason, "steps": step + 1, "final_evals": len(last_evals)}
    if dist_info.is_main:
        if status == "completed":
            export_dir = run_dir if t.save_export else None
            run_info["export"] = export.export(model, quantized, q, counts, export_dir)
            atomic_write_json(run_dir / RUN, run_info)
        if status == "completed" and t.keep_checkpoint:
            save_checkpoint(step + 1)  # the final latent weights and optimizer, to continue training
        atomic_write_json(run_dir / SUMMARY, summary)
        if not t.keep_checkpoint:
            # the run is final; a cluster-scale checkpoint (fp32 weights + Adam moments) is 16 bytes per
            # parameter, and export.pt already holds the weights as they would be stored
            shutil.rmtree(run_dir / CHECKPOINT, ignore_errors=True)
        if logger:
            logger.finish(summary, exit_code=0 if status == "completed" else 1)
    return {**summary, "run_id": run_id}
