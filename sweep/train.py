"""One QAT training job: `train(cfg, run_dir) -> dict` (nothing runs at import time).

The job is idempotent on its run dir: a completed run with the same run_id returns at once, a checkpoint
of the same run_id is resumed, a different run_id in the dir is refused. Training is AdamW with warmup +
cosine (or WSD), grad clipping, delayed QAT (unquantized until ``quant.qat_start``, codebooks fitted at the
switch), evaluation on a fixed validation set, and final loss = mean of the last k evaluations.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sweep import branches as branching
from sweep import checkpoint, contract, data, distributed, meters, quant
from sweep.config import ConfigError, JobConfig, default_threads, from_dict, resolve_device
from sweep.contract import (
    BRANCHES_DIR,
    CHECKPOINT,
    METRICS,
    RUN,
    SKIPPED_STATUSES,
    SUMMARY,
    TrainingEnd,
    atomic_write_json,
    compute_run_id,
    read_json,
)
from sweep.loop import (
    ModelParts,
    Segment,
    Trainer,
    TrainerConfig,
    Validation,
)
from sweep.model import Llama, param_counts
from sweep.run_outputs import RunOutputs
from sweep.rundir import MetricsLog, write_config
from sweep.schedule import evaluation_steps, final_evaluation_steps, plan_steps
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
    if existing is not None and summary is not None and summary.get("status") in SKIPPED_STATUSES:
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
    timeout_s = collective_timeout_s(job)
    dist_info = distributed.init(device_type, timeout_s)
    device = torch.device("cpu")
    if device_type == "cuda":
        device = torch.device("cuda", cuda_index(dist_info.local_rank, torch.cuda.device_count(),
                                                 os.environ.get("CUDA_VISIBLE_DEVICES")))
        torch.cuda.set_device(device)  # before any collective: NCCL binds its communicator to it
    try:
        stop_group = distributed.flag_group(dist_info, device_type, timeout_s)
        result = _run(job, run_dir, run_id, mode, device, dist_info, stop_group)
    except BaseException:
        distributed.shutdown(dist_info, wait_for_peers=False)  # a peer may never reach a barrier now
        raise
    distributed.shutdown(dist_info)
    return result


def cuda_index(local_rank: int, device_count: int, visible: str | None) -> int:
    """The GPU this task trains on, among the `device_count` it sees. A task that sees one GPU (a site
    binding a GPU per task, CUDA_VISIBLE_DEVICES=<one id>) takes it whatever its local rank; a task that
    sees the node's GPUs takes its local rank's, modulo what it sees (not ``cuda:LOCAL_RANK``, which is
    out of range wherever a task sees fewer GPUs than the node runs tasks)."""
    if device_count < 1:
        raise ConfigError(f"train.device=cuda: this task sees no GPU (CUDA_VISIBLE_DEVICES={visible!r}); "
                          "request GPUs from the launcher (gpus_per_node) or set train.device=cpu")
    listed = [v for v in (visible or "").split(",") if v.strip()]
    if len(listed) == 1 or device_count == 1:
        return 0
    return local_rank % device_count


# a checkpoint streams to a shared file system at ~50 MB/s at worst; the peers wait for it in a collective
SAVE_BYTES_PER_S = 50e6


def collective_timeout_s(job: JobConfig) -> float:
    """How long DDP ranks wait for a peer: ``train.collective_timeout_s``, else sized to the longest wait,
    rank 0 writing a checkpoint inside a branch (weights and Adam moments, 16 B per parameter, twice: the
    trunk's snapshot rides along) at SAVE_BYTES_PER_S, plus NCCL's usual 10 minutes for the rest."""
    if job.train.collective_timeout_s is not None:
        return float(job.train.collective_timeout_s)
    save_bytes = 2 * 16 * param_counts(job.model)["N_total"]
    return 600.0 + save_bytes / SAVE_BYTES_PER_S


def _run(job: JobConfig, run_dir: Path, run_id: str, mode: str, device: torch.device,
         dist_info: distributed.DistInfo, stop_group: Any = None) -> dict[str, Any]:
    """The job in steps: its config, the model, where it starts (fresh or from its checkpoint), the run dir,
    the loop, then the outputs."""
    started = time.time()
    corpus = data.load_corpus(job.data)
    counts = param_counts(job.model)
    config = trainer_config(job, run_dir, device, dist_info, corpus, counts, stop_group)
    parts = build_model(job, device, dist_info)
    if mode == "resume":
        start = resume(run_dir, run_id, parts)
    else:
        start = Start(0, {"evals": [], "wall_s": 0.0}, None, describe_run(job, run_id, counts, config))
    if dist_info.is_main:
        prepare_run_dir(run_dir, job, mode, start)
    logger = WandbLogger(job.wandb, run_dir, run_id, job.sweep_name, job.raw) if dist_info.is_main else None
    total_steps = config.steps.total
    trunk = Segment(total_steps, evaluation_steps(total_steps, job.train), MetricsLog(run_dir / METRICS),
                    start.progress["evals"])
    outputs = RunOutputs(job=job, run_dir=run_dir, run_id=run_id, run_info=start.run_info, parts=parts,
                         counts=counts, plan=config.plan, progress=start.progress, trunk=trunk,
                         started=started, is_main=dist_info.is_main)
    meter = meters.Meter(meters.model_flops_per_token(job.model, job.train.seq_len), device,
                         meters.peak_flops(device, job.train.peak_flops), dist_info.world_size)
    with StopSignals() as stop:
        trainer = Trainer(config, parts, hooks=outputs, stop=stop, logger=logger, meter=meter)
        outcome = trainer.run(trunk, start.step, start.branch)
    if outcome.status == TrainingEnd.STOPPED:
        log.info("stopped after %d steps this run (train.max_steps_this_run); checkpoint at %d",
                 trainer.steps_this_run, outcome.done)
        if logger:
            logger.finish({}, exit_code=0)
        return {"status": TrainingEnd.STOPPED, "step": outcome.done, "run_id": run_id}
    return outputs.write_trunk(outcome, logger)


def trainer_config(job: JobConfig, run_dir: Path, device: torch.device, dist_info: distributed.DistInfo,
                   corpus: data.Corpus, counts: dict[str, int], stop_group: Any = None) -> TrainerConfig:
    """The loop's fixed inputs, derived from the job's config once, with the checks that need the run's
    length (a ConfigError before anything trains)."""
    t = job.train
    steps = plan_steps(job, counts["N_quant"], dist_info.world_size)
    plan = branch_plan(job)
    try:
        final_val = data.validation_windows(corpus, max(1, t.eval_tokens // t.seq_len), t.seq_len)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    # mid-run evaluations (the curve) on a fixed subset: cheap; the final ones on the whole set: quiet
    mid_windows = max(1, (t.mid_eval_tokens or t.eval_tokens) // t.seq_len)
    validation = Validation(mid=(final_val[0][:mid_windows], final_val[1][:mid_windows]), final=final_val)
    return TrainerConfig(job=job, run_dir=run_dir, device=device, dist=dist_info, steps=steps, plan=plan,
                         corpus=corpus, validation=validation, stop_group=stop_group)


def build_model(job: JobConfig, device: torch.device, dist_info: distributed.DistInfo) -> ModelParts:
    """The seeded model with its quantized linears, AdamW (no decay on embeddings and norms), compiled
    blocks where asked, wrapped in DDP across ranks."""
    t = job.train
    torch.manual_seed(t.seed)
    model = Llama(job.model).to(device)
    quantized = quant.prepare(model, job.quant)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.dim() >= 2 and "tok_embeddings" not in name else no_decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=t.lr, betas=(t.beta1, t.beta2), fused=device.type == "cuda")
    if t.compile if t.compile is not None else device.type == "cuda":
        compile_blocks(model)
    trainable: torch.nn.Module = model
    if dist_info.enabled:
        trainable = distributed.wrap(model, device)
    return ModelParts(model=model, trainable=trainable, optimizer=optimizer, quantized=quantized)


def describe_run(job: JobConfig, run_id: str, counts: dict[str, int],
                 config: TrainerConfig) -> dict[str, Any]:
    """run.json of a fresh run: what it trains, on what data, code and machine."""
    q, t, steps = job.quant, job.train, config.steps
    run_info = {
        "run_id": run_id, "format": q.format, "bits": q.bits,
        "quantizer": quant.quantizer_kind(q.format, q.bits),
        "P_w": quant.bits_per_weight(q.format, q.bits, q.block_size, q.binary_mean), **counts,
        "D": steps.total * t.batch_tokens,
        "steps": steps.total, "qat_start_step": steps.qat_step, "seed": t.seed, "git_sha": git_sha(),
        "bitlaw_version": contract.bitlaw_version(),  # names the code where there is no git checkout
        "corpus": config.corpus.description, "corpus_sha256": config.corpus.sha256,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(), "host": platform.node(), **job_ids(),
        "sweep": job.sweep_name, "device": config.device.type, "world_size": config.dist.world_size,
        "threads": torch.get_num_threads(),
    }
    if config.plan:
        plan = config.plan
        run_info.update(trunk=run_id, branches=[b.name for b in plan],
                        tokens_trained=branching.trained_tokens(steps.total, t.batch_tokens, plan),
                        tokens_as_separate_runs=branching.separate_tokens(steps.total, t.batch_tokens, plan))
    return run_info


@dataclass
class Start:
    """Where this process starts training."""

    step: int
    progress: dict[str, Any]            # carried across requeues: {"evals": [...], "wall_s": seconds}
    branch: dict | None                 # a branch to finish first (Trainer.branch_checkpoint), or None
    run_info: dict[str, Any]            # run.json


def resume(run_dir: Path, run_id: str, parts: ModelParts) -> Start:
    """Load the checkpoint into the model and optimizer; run.json is the first attempt's, with this
    attempt's job ids and host."""
    # to host memory: load_state_dict copies into the device's tensors, and a branch's trunk snapshot
    # stays on the host (as Trainer takes it); loaded to the device it held +4 B/param (+16 B in a branch)
    return resume_from(checkpoint.load(run_dir / CHECKPOINT, map_location="cpu"), run_dir, run_id, parts)


def resume_from(payload: dict[str, Any], run_dir: Path, run_id: str, parts: ModelParts) -> Start:
    """resume() given the loaded checkpoint; keeps none of its weights or optimizer state (only the step,
    the progress and a branch's host snapshot), so they are freed when the caller drops the payload."""
    checkpoint.restore(payload, model=parts.model, optimizer=parts.optimizer)
    step, progress = payload.pop("step"), payload.pop("progress")
    payload.clear()
    run_info = {**read_json(run_dir / RUN), **job_ids(), "host": platform.node()}
    log.info("resume: %s from step %d%s", run_id, step,
             f" (branch {progress['branch']['name']})" if progress.get("branch") else "")
    branch = progress.pop("branch", None)
    return Start(step, progress, branch, run_info)


def prepare_run_dir(run_dir: Path, job: JobConfig, mode: str, start: Start) -> None:
    """The main rank's run dir before training: the config, no summary, the metrics log cut back to where
    this process starts (a fresh run: no log, no branches), run.json."""
    metrics = MetricsLog(run_dir / METRICS)
    write_config(run_dir, job.raw)
    (run_dir / SUMMARY).unlink(missing_ok=True)  # a failed attempt's summary: this one is running
    if mode == "resume":
        # inside a branch the trunk stopped at the fork: its log ends there
        metrics.truncate_after(start.branch["trunk_step"] if start.branch else start.step)
    else:
        metrics.path.unlink(missing_ok=True)
        shutil.rmtree(run_dir / BRANCHES_DIR, ignore_errors=True)  # a fresh trunk's branches
    atomic_write_json(run_dir / RUN, start.run_info)


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
