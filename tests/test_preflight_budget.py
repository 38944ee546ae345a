"""The preflight (sweep/budget.py): its memory model against measured CPU peaks, experiment=cluster fitting
80 GB and finishing in its Slurm time, `bitlaw plan`'s per-job JSON, and a Slurm submission refused (or
forced) before anything is queued."""

from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from hydra import compose
from omegaconf import OmegaConf
from torch.profiler import ProfilerActivity, profile

from sweep import budget, quant, quant_batch
from sweep.config import from_dict
from sweep.distributed import DistInfo
from sweep.grid import composing
from sweep.loop import forward_backward
from sweep.slurm import SubmissionError
from sweep.submission import validate_job
from sweep.train import build_model

# Hydra-composed cluster grids and CPU training steps under the profiler: the unit tier leaves them out
pytestmark = pytest.mark.integration

RUNGS = ("l30m", "l60m", "l110m", "l220m", "l500m", "l1b")
SLURM_DEFAULTS = {"nodes": 1, "tasks_per_node": 1, "timeout_min": 60, "max_num_timeout": 3}


def composed(*overrides: str) -> dict:
    with composing():
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


def measured_peak(cfg: dict, steps: int = 3) -> int:
    """The peak of live CPU tensor bytes over `steps` training steps (QAT on), model and AdamW included:
    the running sum of torch's profiler memory events (every allocation and free of the CPU allocator)
    from before the model is built. The step is the loop's (sweep/loop.py Trainer._update)."""
    job = from_dict(cfg)
    t = job.train
    seq, rows = t.seq_len, t.batch_tokens // t.seq_len
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        parts = build_model(job, torch.device("cpu"), DistInfo())
        if parts.quantized:
            quant.switch_on(parts.quantized, job.quant, 0)
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            x = torch.randint(0, job.model.vocab_size, (rows, seq), generator=g)
            y = torch.randint(0, job.model.vocab_size, (rows, seq), generator=g)
            quant_batch.update(parts.quantized)
            forward_backward(parts.trainable, x, y, t.micro_batch_tokens // seq, contextlib.nullcontext)
            torch.nn.utils.clip_grad_norm_(parts.model.parameters(), t.grad_clip)
            parts.optimizer.step()
            parts.optimizer.zero_grad(set_to_none=True)
            del x, y
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("model,point,batch,seq,micro", [
    ("r49k", "kmeans2", 4096, 128, 4096),    # activations and logits dominate
    ("r197k", "bf16", 8192, 256, 4096),      # no quantizer; two micro-batches accumulate
    ("r786k", "kmeans4", 4096, 128, 256),    # two sequences per micro-batch: weights and AdamW weigh more
])
def test_cpu_peak_memory_matches_the_model_within_25_percent(model, point, batch, seq, micro) -> None:
    torch.set_num_threads(1)
    cfg = composed(f"model={model}", f"point={point}", f"train.batch_tokens={batch}", f"train.seq_len={seq}",
                   f"train.micro_batch_tokens={micro}")
    terms = budget.memory_terms(cfg["model"], cfg["train"], cfg["quant"], 1, "cpu", False, micro)
    predicted, peak = sum(terms.values()), measured_peak(cfg)
    assert abs(predicted - peak) <= 0.25 * peak, (predicted, peak, terms)


def cluster_job(rung: str, point: str = "kmeans4", *extra: str) -> dict:
    return composed("experiment=cluster", f"rung={rung}", f"point={point}", *extra)


@pytest.mark.parametrize("rung", RUNGS)
def test_every_cluster_rung_fits_80gb_and_finishes_in_its_slurm_time(rung: str) -> None:
    """Its own resources (sweep.slurm) over the Slurm launcher's defaults, at 40 % MFU: the quantized point
    (the STE delta) and bf16 both."""
    for point in ("kmeans4", "bf16"):
        job = cluster_job(rung, point)
        res = budget.resources(budget.job_launcher(SLURM_DEFAULTS, job))
        b = budget.job_budget(rung, job, res)
        assert b.fits and b.finishes, (b.peak_memory_bytes, b.wall_s, b.time_limit_s, b.fixes)
        assert b.peak_memory_bytes <= 0.92 * 80e9  # margin for what the model cannot see
        assert b.host_memory_bytes <= res.mem_gb * 1e9  # each rank builds the fp32 model on the host
        assert (res.world_size == 1) == (rung in ("l30m", "l60m", "l110m"))  # small rungs: one GPU each


def test_the_old_cluster_settings_are_named_with_their_fixes() -> None:
    """l1b at 32768 tokens per micro-batch and the launcher's ~4 h: cannot fit, cannot finish."""
    job = cluster_job("l1b", "kmeans2", "train.micro_batch_tokens=32768", "sweep.slurm.timeout_min=60",
                      "sweep.slurm.max_num_timeout=3")
    b = budget.job_budget("rung=l1b", job, budget.resources(budget.job_launcher(SLURM_DEFAULTS, job)))
    assert not b.fits and b.peak_memory_bytes > 80e9
    assert not b.finishes and b.time_limit_s == 4 * 3600
    assert any(f.startswith("train.micro_batch_tokens=16384") for f in b.fixes), b.fixes
    assert any(f.startswith("sweep.slurm.max_num_timeout=") for f in b.fixes), b.fixes
    line = budget.refusal([b])
    assert line.startswith("preflight: rung=l1b needs") and "\n" not in line


def test_a_slurm_submission_is_refused_before_anything_is_queued_unless_forced(tmp_path) -> None:
    tokens = tmp_path / "tokens.bin"
    tokens.write_bytes(b"\0" * 2**22)  # 2M uint16 ids: a validation split of several 2048-token windows
    job = cluster_job("l1b", "kmeans2", "train.micro_batch_tokens=32768", f"data.path={tokens}")
    with pytest.raises(SubmissionError) as err:
        validate_job(job, ["rung=l1b"], "slurm", SLURM_DEFAULTS)
    message = str(err.value)
    assert "train.micro_batch_tokens=16384" in message and "sweep.preflight.force=true" in message
    assert message.endswith("nothing was submitted") and "\n" not in message
    forced = cluster_job("l1b", "kmeans2", "train.micro_batch_tokens=32768", "sweep.preflight.force=true",
                         f"data.path={tokens}")
    validate_job(forced, ["rung=l1b"], "slurm", SLURM_DEFAULTS)  # no error
    validate_job(job, ["rung=l1b"], "local", SLURM_DEFAULTS)  # the budget is Slurm's: a local run goes on


def test_plan_json_lists_each_job_with_its_budget() -> None:
    command = ["plan", "experiment=cluster", "rung=l30m,l60m,l1b", "point=kmeans2",
               "train.micro_batch_tokens=32768", "--cost", "--json"]
    out = subprocess.run([sys.executable, "-m", "bitlaw", *command], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    jobs = {j["name"]: j for j in report["jobs"]}
    assert set(jobs) == {"rung=l30m", "rung=l60m", "rung=l1b"}
    for j in jobs.values():
        assert {"name", "peak_memory_bytes", "memory_limit_bytes", "wall_s", "time_limit_s", "fits",
                "finishes"} <= set(j) and j["memory_limit_bytes"] == 80e9
    assert jobs["rung=l30m"]["fits"] and not jobs["rung=l1b"]["fits"]
    assert report["preflight"]["refusal"].startswith("preflight: rung=l1b")
    assert report["compute"]["trunks"] == 3  # the cost is still there
