"""The training step at cluster scale (figures, no assertions): step time, tokens/s, MFU and peak memory.

    .venv/bin/python benchmarks/gpu_step.py                       # CUDA: l110m, l500m; CPU: r49k
    .venv/bin/python benchmarks/gpu_step.py --models r49k --modes eager --steps 3   # CI's quick CPU run

Per model rung × point (bf16 = unquantized; k-means and uniform at 1-4 bits) × mode (eager, compiled),
one optimizer step as the loop takes it (sweep/loop.py): quantize once (``quant_batch.update``: on CUDA
its torch path, no host sync), forward/backward over micro-batches (gradient accumulation), clip, AdamW,
with bf16 autocast on CUDA. Dynamo is reset before every configuration, so each compiles from scratch
(without it the next rung compiled as a dynamic-shape recompile of the last). Reported: the median step
time over --steps timed steps (after warm-up steps, which include compilation), tokens/s, MFU (model FLOPs
with attention, sweep/meters.py, ÷ the GPU's bf16 peak or --peak-flops; none on CPU without one), the QAT
overhead against bf16 in the same mode, and peak memory (CUDA allocator; CPU: the process's peak RSS).
Where two GPUs exist, it then times a 2-rank DDP step (nccl, sweep/distributed.py's wrap, the global
batch split across ranks; MFU per GPU) for --ddp-points; with fewer it says so and skips it.
Targets on a GPU (issue 27): >= 40 % MFU at l110m-l500m with QAT, QAT overhead <= 5 %.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweep import distributed, meters, quant, quant_batch  # noqa: E402
from sweep.model import Llama, ModelConfig  # noqa: E402
from sweep.step import forward_backward  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
POINTS = {"bf16": ("none", 16), **{f"{fmt}{bits}": (fmt, bits) for fmt in ("kmeans", "uniform")
                                    for bits in (1, 2, 3, 4)}}


def load_rung(name: str, seq_len: int) -> ModelConfig:
    config = ModelConfig(**yaml.safe_load((CONF / f"{name}.yaml").read_text()))
    config.max_seq_len = max(config.max_seq_len, seq_len)
    return config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config: ModelConfig, point: str, compiled: bool, args: argparse.Namespace,
            device: torch.device, world_size: int = 1) -> dict[str, float]:
    """One configuration's figures; with `world_size` > 1 this process is one DDP rank of that many, and
    tokens/s counts the global batch while MFU is per GPU."""
    torch._dynamo.reset()  # a fresh compile per configuration: no recompile, no cache entries carried over
    torch.manual_seed(0)
    model = Llama(config).to(device)
    fmt, bits = POINTS[point]
    q = quant.QuantConfig(format=fmt, bits=bits)
    quantized = quant.prepare(model, q)
    quant.switch_on(quantized, q, seed=0)  # QAT on from the first step: the cost being measured
    if compiled:
        for layer in model.layers:  # as sweep/train.py's compile_blocks
            layer.compile()
    trainable = distributed.wrap(model, device) if world_size > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    sequences = max(1, args.batch_tokens // args.seq_len // world_size)
    micro = max(1, args.micro_batch_tokens // args.seq_len)
    x = torch.randint(0, config.vocab_size, (sequences, args.seq_len), device=device)
    y = torch.randint(0, config.vocab_size, (sequences, args.seq_len), device=device)

    def autocast() -> contextlib.AbstractContextManager:
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup + args.steps):
        sync(device)
        start = time.perf_counter()
        quant_batch.update(quantized)
        forward_backward(trainable, x, y, micro, autocast, chunked_loss=device.type == "cuda")  # as the loop
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if i >= args.warmup:  # warm-up steps (and compilation) excluded
            times.append(time.perf_counter() - start)
    times.sort()
    seconds = times[len(times) // 2]  # median: robust to other processes on a shared machine
    tokens_per_s = args.batch_tokens / seconds
    per_token = meters.model_flops_per_token(config, args.seq_len)
    peak = meters.peak_flops(device, args.peak_flops)
    return {"ms": 1e3 * seconds, "tokens_per_s": tokens_per_s,
            "mfu": per_token * tokens_per_s / (peak * world_size) if peak else float("nan"),
            "memory_gib": meters.peak_memory_bytes(device) / 2**30}


def _ddp_rank(rank: int, world_size: int, port: int, rung: str, point: str, compiled: bool, args: dict,
              out: str) -> None:
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.cuda.set_device(rank)
        namespace = argparse.Namespace(**args)
        result = measure(load_rung(rung, namespace.seq_len), point, compiled, namespace,
                         torch.device("cuda", rank), world_size)
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def measure_ddp(rung: str, point: str, compiled: bool, args: argparse.Namespace,
                world_size: int = 2) -> dict[str, float]:
    """The same step on `world_size` GPUs under DDP, one spawned process per GPU; rank 0's figures."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank0.json")
        mp.spawn(_ddp_rank, args=(world_size, port, rung, point, compiled, vars(args), out),
                 nprocs=world_size, join=True)
        return json.loads(Path(out).read_text())


def report(mode: str, point: str, r: dict[str, float], baseline: float) -> None:
    print(f"  {mode:>8} {point:>8}: {r['ms']:9.2f} ms/step {r['tokens_per_s']:11,.0f} tok/s  "
          f"MFU {100 * r['mfu']:5.1f} %  QAT overhead {100 * (r['ms'] / baseline - 1):+6.1f} %  "
          f"peak memory {r['memory_gib']:.2f} GiB", flush=True)


def main(argv: list[str] | None = None) -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--models", default="l110m,l500m" if cuda else "r49k")
    parser.add_argument("--points", default=",".join(POINTS))
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--seq-len", type=int, default=2048 if cuda else 128)
    parser.add_argument("--batch-tokens", type=int, default=131072 if cuda else 1024)
    parser.add_argument("--micro-batch-tokens", type=int, default=16384 if cuda else 1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--ddp-points", default="bf16,kmeans4,uniform4",
                        help="points of the 2-rank DDP step (where 2 GPUs exist; '' for none)")
    parser.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s for MFU (default: the "
                        "GPU's bf16 dense peak from sweep/meters.py; none on CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={name} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"loadavg={os.getloadavg()[0]:.2f} batch={args.batch_tokens} tokens "
          f"(micro {args.micro_batch_tokens}, seq {args.seq_len})")
    for rung in args.models.split(","):
        config = load_rung(rung, args.seq_len)
        print(f"\n{rung}: {meters.model_flops_per_token(config, args.seq_len) / 1e6:.1f} MFLOP/token")
        for mode in args.modes.split(","):
            baseline = None
            for point in args.points.split(","):
                r = measure(config, point, mode == "compiled", args, device)
                baseline = baseline or r["ms"]
                report(mode, point, r, baseline)
    if not args.ddp_points:
        return
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < 2:
        print(f"\n2-rank DDP step: skipped ({gpus} GPU(s) here; it needs 2)")
        return
    mode = "compiled" if "compiled" in args.modes.split(",") else "eager"
    for rung in args.models.split(","):
        print(f"\n{rung}, 2-rank DDP ({mode}; global batch {args.batch_tokens} tokens, MFU per GPU):")
        baseline = None
        for point in args.ddp_points.split(","):
            r = measure_ddp(rung, point, mode == "compiled", args)
            baseline = baseline or r["ms"]
            report(mode, point, r, baseline)


if __name__ == "__main__":
    main()
