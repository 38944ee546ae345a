"""The GPU path's logic, checked on CPU (issue 27: items 3, 6-10, 12): per-GPU MFU, the batch copy, resume and
branch-snapshot memory, the per-step stop poll, sharded evaluation, device binding, the chunked head + loss,
real-valued RoPE. What only a GPU can show is argued in docs/architecture.md §3."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import time
import weakref
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import compose_config

from sweep import checkpoint, data, distributed, loop, meters
from sweep.config import ConfigError, from_dict
from sweep.model import (
    Llama,
    ModelConfig,
    apply_rotary,
    apply_rotary_real,
    linear_cross_entropy,
    param_counts,
    rotary_tables,
)
from sweep.train import build_model, collective_timeout_s, cuda_index, resume_from, trainer_config

# the tiny rung, as tests/test_train.py trains it: 16 steps of 1024 tokens, QAT from step 10
FAST = ["model=tiny", "train.tokens=16384", "train.batch_tokens=1024", "train.seq_len=64", "train.threads=1",
        "train.eval_every=8", "train.eval_tokens=2048", "train.final_eval_spacing=1", "train.log_every=4",
        "data.max_bytes=2000000", "logger.wandb.mode=disabled", "quant.qat_start=10", "point=uniform3"]
PEAK = 1e12


# ---------------------------------------------------------------- item 3: MFU per GPU
def test_mfu_is_per_gpu_the_global_rate_over_every_ranks_peak() -> None:
    one = meters.Meter(1000.0, torch.device("cpu"), PEAK, world_size=1).log_fields(4e8, None)["mfu"]
    eight = meters.Meter(1000.0, torch.device("cpu"), PEAK, world_size=8).log_fields(8 * 4e8, None)["mfu"]
    assert one == pytest.approx(0.4) and eight == pytest.approx(one)  # 8 GPUs at one GPU's rate each
    assert meters.Meter(1000.0, torch.device("cpu"), None, world_size=8).log_fields(1.0, None)["mfu"] is None


# ---------------------------------------------------------------- item 6: the batch copy
def test_batches_are_pinned_and_copied_non_blocking_only_to_a_gpu() -> None:
    assert data.copy_kwargs(torch.device("cuda", 3)) == {"pin_memory": True, "non_blocking": True}
    assert data.copy_kwargs(torch.device("cpu")) == {"pin_memory": False, "non_blocking": False}
    batch = torch.arange(12).view(3, 4)[:, :-1]  # a window view, as data.windows returns
    assert data.to_device(batch, torch.device("cpu")) is batch  # on CPU: no copy at all


# ---------------------------------------------------------------- items 7, 8: host memory
def test_the_branch_snapshot_is_a_host_copy_that_aliases_nothing() -> None:
    model = Llama(ModelConfig())
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    snapshot = loop.host_copy(state)
    live = [t for t in _tensors(state)]
    copied = [t for t in _tensors(snapshot)]
    assert len(copied) == len(live) > 10
    assert all(c.device.type == "cpu" and torch.equal(c, t) for c, t in zip(copied, live, strict=True))
    pointers = {t.untyped_storage().data_ptr() for t in live}
    assert not {c.untyped_storage().data_ptr() for c in copied} & pointers
    assert snapshot["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _tensors(value)
    elif isinstance(tree, list | tuple):
        for value in tree:
            yield from _tensors(value)


def test_resume_keeps_no_reference_to_the_loaded_weights(tmp_path) -> None:
    job = from_dict(compose_config(*FAST))
    saved = build_model(job, torch.device("cpu"), distributed.DistInfo())
    with torch.no_grad():
        for param in saved.model.parameters():
            param.add_(1.0)
    (tmp_path / "run.json").write_text("{}")
    checkpoint.save(tmp_path / "checkpoint", model=saved.model, optimizer=saved.optimizer, run_id="r", step=7,
                    progress={"evals": [[4, 5.0, 0.1]], "wall_s": 1.0})
    payload = checkpoint.load(tmp_path / "checkpoint", map_location="cpu")
    loaded = weakref.WeakValueDictionary(payload["model"])
    assert len(loaded) > 10
    fresh = build_model(job, torch.device("cpu"), distributed.DistInfo())
    start = resume_from(payload, tmp_path, "r", fresh)
    del payload
    gc.collect()
    assert len(loaded) == 0  # every loaded weight was freed: the model holds copies, Start holds none
    assert start.step == 7 and start.progress["evals"] == [[4, 5.0, 0.1]]
    for (name, param), (_, ref) in zip(fresh.model.named_parameters(), saved.model.named_parameters(),
                                       strict=True):
        assert torch.equal(param, ref), name


# ---------------------------------------------------------------- item 8: collective timeout
def test_the_collective_timeout_covers_a_branch_checkpoint_save() -> None:
    l1b = from_dict(compose_config("model=l1b"))
    assert collective_timeout_s(l1b) > 600 + 2 * 16 * 1.1e9 / 50e6  # 37 GB at 50 MB/s on top of 10 min
    assert collective_timeout_s(from_dict(compose_config("train.collective_timeout_s=3600"))) == 3600.0
    with pytest.raises(ConfigError, match="train.collective_timeout_s"):
        from_dict(compose_config("train.collective_timeout_s=0"))


# ---------------------------------------------------------------- item 10: device binding
@pytest.mark.parametrize(("local_rank", "count", "visible", "index"), [
    (3, 8, None, 3),          # a task sees its node's GPUs: its local rank's
    (3, 8, "0,1,2,3,4,5,6,7", 3),
    (5, 4, "0,1,2,3", 1),     # fewer GPUs seen than tasks on the node: modulo (was cuda:5, out of range)
    (3, 1, "6", 0),           # one GPU bound per task: that one, whatever the local rank (was cuda:3)
    (3, 1, None, 0),          # one GPU and no CUDA_VISIBLE_DEVICES (cgroup binding)
])
def test_each_task_binds_a_gpu_it_can_see(local_rank, count, visible, index) -> None:
    assert cuda_index(local_rank, count, visible) == index


def test_a_task_that_sees_no_gpu_is_one_line_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES=''.*train.device=cpu"):
        cuda_index(0, 0, "")


def test_resume_restores_the_rng_of_the_gpus_saved_and_visible() -> None:
    assert list(checkpoint.cuda_rng_devices(saved=8, visible=1)) == [0]  # set_rng_state_all raised here
    assert list(checkpoint.cuda_rng_devices(saved=1, visible=8)) == [0]
    assert list(checkpoint.cuda_rng_devices(saved=4, visible=4)) == [0, 1, 2, 3]


# ---------------------------------------------------------------- item 12: the step
def test_real_rope_gives_the_complex_forms_bits_forward_and_backward() -> None:
    torch.manual_seed(0)
    for seq_len, head_dim in ((64, 16), (128, 64)):
        x = torch.randn(2, 4, seq_len, head_dim, requires_grad=True)
        upstream = torch.randn(2, 4, seq_len, head_dim)
        tables = rotary_tables(seq_len, head_dim, 10000.0, torch.device("cpu"))
        complex_out, real_out = apply_rotary(x, tables), apply_rotary_real(x, tables)  # CPU eager: complex
        assert torch.equal(complex_out, real_out)
        (complex_grad,) = torch.autograd.grad(complex_out, x, upstream)
        (real_grad,) = torch.autograd.grad(real_out, x, upstream)
        assert torch.equal(complex_grad, real_grad)


@pytest.mark.parametrize("chunk", [7, 64, 4096])  # uneven chunks, one per sequence, one for all
def test_the_chunked_head_and_loss_match_whole_logits_to_float32_rounding(chunk) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(150, 32, requires_grad=True)
    weight = (0.1 * torch.randn(256, 32)).requires_grad_()
    targets = torch.randint(0, 256, (150,))
    whole = F.cross_entropy(F.linear(hidden, weight).float(), targets)
    whole_grads = torch.autograd.grad(whole, (hidden, weight))
    chunked = linear_cross_entropy(hidden, weight, targets, chunk)
    chunked_grads = torch.autograd.grad(chunked, (hidden, weight))
    # the sum over chunks rounds in another order: equal to float32 rounding, not bit for bit (so the
    # CPU loop keeps whole logits, and its losses, bit for bit)
    assert chunked.item() == pytest.approx(whole.item(), rel=2e-7)
    for mine, reference in zip(chunked_grads, whole_grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-7)


def test_the_model_returns_the_chunked_loss_when_given_targets() -> None:
    torch.manual_seed(0)
    model = Llama(ModelConfig())
    tokens, targets = torch.randint(0, 256, (3, 40)), torch.randint(0, 256, (3, 40))
    whole = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
    assert model(tokens, targets).item() == pytest.approx(whole.item(), rel=2e-7)


def test_no_logits_outlive_their_micro_batch() -> None:
    """forward_backward frees each micro-batch's logits before the next forward: the peak of live
    (b, T, vocab) tensors is one micro-batch's, counted by a saved-tensor hook on their creation."""
    torch.manual_seed(0)
    model = Llama(ModelConfig())
    x, y = torch.randint(0, 256, (4, 16)), torch.randint(0, 256, (4, 16))
    live, peak = weakref.WeakSet(), []

    def count(module, args, output):
        live.add(output)
        peak.append(len(live))

    handle = model.output.register_forward_hook(count)
    try:
        loop.forward_backward(model, x, y, 1, contextlib.nullcontext)
    finally:
        handle.remove()
    assert len(peak) == 4 and max(peak) == 1


# ---------------------------------------------------------------- 2 ranks over gloo: items 3, 8, 9
class _Recorder:
    """The loop's hooks: the step of the first checkpoint asked for, where the test ends the run (a real
    job exits there: submitit's handler, or Preempted)."""

    def __init__(self) -> None:
        self.saved: list[int] = []

    def save_checkpoint(self, done, branch) -> None:
        self.saved.append(done)
        raise _Stopped

    def write_branch(self, *args) -> None:
        pass

    def on_stop(self, done, signum) -> None:
        pass


class _Stopped(Exception):
    pass


class _SignalAtPoll:
    """A stop signal that arrives on this rank just before its `at`-th poll (the loop reads the flag once
    per step until it is set), or never."""

    def __init__(self, at: int | None) -> None:
        self.at, self.polls = at, 0

    @property
    def received(self) -> int | None:
        self.polls += 1
        return 12 if self.at is not None and self.polls >= self.at else None

    def hand_over(self) -> None:
        raise _Stopped


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    info, cpu, result = distributed.DistInfo(rank, 2, rank), torch.device("cpu"), {}
    # item 9: the sharded evaluation against this rank's own unsharded one
    torch.manual_seed(0)
    model = Llama(ModelConfig())
    val = data.windows(torch.randint(0, 256, (2000,)).numpy(), torch.arange(0, 1100, 100).numpy(), 64)
    result["unsharded"] = loop.evaluate(model, val, cpu, contextlib.nullcontext, 3)
    result["sharded"] = loop.evaluate(model, val, cpu, contextlib.nullcontext, 3, info)
    # item 8: the stop flag's cost per step, and a stop on rank 1 between log steps
    calls = 300
    began = time.perf_counter()
    for _ in range(calls):
        distributed.any_rank(False, info, cpu)
    result["poll_ms"] = 1e3 * (time.perf_counter() - began) / calls
    job = from_dict(compose_config(*FAST, "train.log_every=10", "train.checkpoint_every_s=1e9"))
    config = trainer_config(job, Path(out) / "stop", cpu, info, data.load_corpus(job.data),
                            param_counts(job.model))
    (Path(out) / "stop").mkdir(exist_ok=True)
    hooks, stop = _Recorder(), _SignalAtPoll(3 if rank == 1 else None)
    trainer = loop.Trainer(config, build_model(job, cpu, info), hooks, stop)
    trunk = loop.Segment(config.steps.total, set(), loop.MetricsLog(Path(out) / "stop" / f"m{rank}.jsonl"))
    with contextlib.suppress(_Stopped):
        trainer.run(trunk, 0, None)
    result["stop_saved"] = hooks.saved
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    # The stopped run's DDP wrapper and reducer hold gloo state of this group: free them and meet the other
    # rank before the next phase (a rank that tore them down while its peer was still in the stop phase's
    # last collective was seen to abort: "terminate called without an active exception").
    del trainer
    gc.collect()
    tdist.barrier()
    # item 3: a whole 2-rank run with a stated peak, its metrics.jsonl read by the test (shuts the group)
    from sweep.train import train

    train(compose_config(*FAST, f"train.peak_flops={PEAK}"), str(Path(out) / "run"))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_ranks")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=2, join=True)
    return out


@pytest.mark.integration
def test_sharded_evaluation_equals_the_unsharded_mean_bit_for_bit(two_ranks) -> None:
    for rank in (0, 1):
        result = json.loads((two_ranks / f"rank{rank}.json").read_text())
        assert result["sharded"] == result["unsharded"]  # mean and standard error, exactly


@pytest.mark.integration
def test_a_stop_on_one_rank_between_log_steps_stops_every_rank_at_the_next_step(two_ranks) -> None:
    results = [json.loads((two_ranks / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    # rank 1's signal is seen at its 3rd poll, after step 3; log steps are every 10 (polled there before)
    assert [r["stop_saved"] for r in results] == [[3], [3]]
    print(f"stop-flag all-reduce on 2-rank gloo: {results[0]['poll_ms']:.3f} ms per step")


@pytest.mark.integration
def test_two_rank_mfu_is_per_gpu_and_plan_mfu_costs_agree(two_ranks) -> None:
    rows = [json.loads(line) for line in (two_ranks / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if r.get("mfu") is not None]
    assert len(logged) >= 3
    assert json.loads((two_ranks / "run" / "run.json").read_text())["world_size"] == 2
    for row in logged:
        # per GPU: the global rate over both ranks' peaks (it was over one peak: 2x)
        assert row["mfu"] * PEAK * 2 == pytest.approx(row["flops_per_token"] * row["tokens_per_s"], rel=1e-12)
        # `bitlaw plan --mfu` prices FLOPs at mfu × one GPU's peak per GPU: the GPU-seconds for these
        # tokens come out as the ranks' own (2 GPUs × wall), not a world size too few
        tokens = 1024 * 4
        gpu_s = tokens * row["flops_per_token"] / (row["mfu"] * PEAK)
        assert gpu_s == pytest.approx(2 * tokens / row["tokens_per_s"], rel=1e-12)
