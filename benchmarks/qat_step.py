"""QAT step benchmark (figures, no assertions).

    .venv/bin/python benchmarks/qat_step.py [--quick] [--models r49k,r111k,r295k,r786k] [--threads 1]

Prints, per model rung and (format, bits) — k-means and uniform at 1-4 bits (1-bit uniform is the binary
quantizer, 2-bit uniform the ternary grid) — ms per training step, tokens/s and the QAT overhead against the
unquantized step, then one table of the overheads, rung × format × width; without --quick also the k-means
codebook fit time per 1M weights and the achieved FLOP/s (6·N·tokens/s, N = the parameters that do
matmuls) against the FLOP/s that ``torch.mm`` reaches on the same shapes. On CUDA it also prints MFU
against a peak you pass (--peak-tflops). Each step begins with ``quant_batch.update``, as the training
loop's does (--torch-path: its torch path, what a GPU runs, instead of the fused CPU kernels).

The points are timed interleaved, step by step, so load on a shared machine falls on all of them alike.
On CPU with one thread the default clock is the process's CPU time (``--clock cpu``): on an idle machine it
equals the wall time, and on a loaded one it leaves out the time spent waiting for a core (cache contention
from other processes remains). --quick (9 timed steps per point, no fit or torch.mm figures) takes ~1-2 min
idle; the full run ~3 min. Target (issue 27): whole-step QAT overhead <= 10 % at every CPU rung for every
format and width, aim <= 5 %; docs/performance.md ("CPU QAT overhead") has the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweep import quant, quant_batch  # noqa: E402
from sweep.model import Llama, ModelConfig, param_counts  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
POINTS = [("none", 16), ("kmeans", 1), ("kmeans", 2), ("kmeans", 3), ("kmeans", 4),
          ("uniform", 1), ("uniform", 2), ("uniform", 3), ("uniform", 4)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Stepper:
    """One model rung at one (format, bits) point, QAT on, ready to time single optimizer steps."""

    def __init__(self, config: ModelConfig, fmt: str, bits: int, batch: int, seq_len: int,
                 device: torch.device):
        torch.manual_seed(0)
        self.device = device
        self.model = Llama(config).to(device)
        q = quant.QuantConfig(format=fmt, bits=bits)
        self.quantized = quant.prepare(self.model, q)
        quant.switch_on(self.quantized, q, seed=0)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=device.type == "cuda")
        self.x = torch.randint(0, config.vocab_size, (batch, seq_len), device=device)
        self.y = torch.randint(0, config.vocab_size, (batch, seq_len), device=device)
        self.times: list[float] = []

    def step(self, record: bool, clock, kernels: bool) -> None:
        sync(self.device)
        start = clock()
        quant_batch.update(self.quantized, kernels=kernels)  # as the training loop does before each step
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.model(self.x)
        F.cross_entropy(logits.float().flatten(0, 1), self.y.flatten()).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync(self.device)
        if record:
            self.times.append(clock() - start)

    def median(self) -> float:
        times = sorted(self.times)
        return times[len(times) // 2]  # median: robust to other processes on a shared machine


def step_times(config: ModelConfig, batch: int, seq_len: int, device: torch.device, repeats: int,
               clock, kernels: bool = True) -> tuple[list[float], list[float]]:
    """(median step time, QAT overhead) per point of POINTS, the points interleaved step by step
    (A B C … A B C … A), so that a load change on a shared machine hits every point alike instead of
    whichever ran then. The overhead is paired: the median over rounds of a step's time over the mean of
    the unquantized steps just before and just after it, a steadier figure on a loaded machine than the
    ratio of two medians."""
    steppers = [Stepper(config, fmt, bits, batch, seq_len, device) for fmt, bits in POINTS]
    for i in range(repeats + 3):
        for stepper in steppers:
            stepper.step(i >= 3, clock, kernels)  # warm-up steps excluded
    steppers[0].step(True, clock, kernels)  # closes the last round's bracket
    base = steppers[0].times
    overheads = []
    for stepper in steppers:
        ratios = sorted(t / ((base[i] + base[i + 1]) / 2) for i, t in enumerate(stepper.times[:repeats]))
        overheads.append(100 * (ratios[len(ratios) // 2] - 1))
    return [stepper.median() for stepper in steppers], overheads


def matmul_flops(config: ModelConfig, tokens: int, device: torch.device, repeats: int = 10) -> float:
    """FLOP/s that torch.mm reaches on this model's linear shapes (forward shapes, weighted by FLOPs)."""
    kv = config.n_kv_heads * config.head_dim
    shapes = [(config.d_model, config.d_model)] * 2 + [(config.d_model, kv)] * 2 \
        + [(config.d_model, config.ffn_dim)] * 2 + [(config.ffn_dim, config.d_model)]
    shapes = shapes * config.n_layers + [(config.d_model, config.vocab_size)]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    total_flops, total_time = 0.0, 0.0
    for d_in, d_out in set(shapes):
        a = torch.randn(tokens, d_in, device=device, dtype=dtype)
        b = torch.randn(d_in, d_out, device=device, dtype=dtype)
        for _ in range(3):
            torch.mm(a, b)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        sync(device)
        seconds = (time.perf_counter() - start) / repeats
        count = shapes.count((d_in, d_out))
        total_flops += count * 2 * tokens * d_in * d_out
        total_time += count * seconds
    return total_flops / total_time


def kmeans_fit_seconds(n_weights: int, bits: int) -> float:
    weights = torch.randn(n_weights // 1024, 1024)
    start = time.perf_counter()
    quant.fit_centroids(weights, 2**bits, seed=0)
    return time.perf_counter() - start


def load_rung(name: str) -> ModelConfig:
    return ModelConfig(**yaml.safe_load((CONF / f"{name}.yaml").read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="r49k,r111k,r295k,r786k", help="default: the CPU ladder")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (demo jobs use 1 each)")
    parser.add_argument("--batch-tokens", type=int, default=1024, help="default: the demo's batch")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per point (21; --quick 9)")
    parser.add_argument("--quick", action="store_true", help="9 timed steps, no fit or torch.mm figures")
    parser.add_argument("--clock", choices=("cpu", "wall"), default=None,
                        help="step timer (default: cpu on a CPU with one thread, else wall)")
    parser.add_argument("--torch-path", action="store_true",
                        help="time the update's torch path (what a GPU runs) instead of the CPU kernels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak for MFU (bf16 dense)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (9 if args.quick else 21)
    clock_name = args.clock or ("cpu" if device.type == "cpu" and args.threads == 1 else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    kernels = not args.torch_path
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"loadavg={os.getloadavg()[0]:.2f} clock={clock_name} repeats={repeats} "
          f"update={'torch path' if args.torch_path else 'fused CPU kernels where they apply'}")

    if not args.quick:
        print("\nk-means codebook fit (Lloyd, tol 1e-4), seconds per 1M weights:")
        for bits in (1, 2, 3, 4):
            print(f"  {bits} bit(s): {kmeans_fit_seconds(2**20, bits):.3f} s")

    batch = args.batch_tokens // args.seq_len
    table: dict[str, list[float]] = {}
    for name in args.models.split(","):
        config = load_rung(name)
        config.max_seq_len = max(config.max_seq_len, args.seq_len)
        counts = param_counts(config)
        matmul_params = counts["N_total"] - config.vocab_size * config.d_model  # embedding is a lookup
        attention_flops = 12 * config.n_layers * config.d_model * args.seq_len  # per token, fwd+bwd
        flops_per_token = 6 * matmul_params + attention_flops
        print(f"\n{name}: N_quant={counts['N_quant']:,} N_total={counts['N_total']:,} "
              f"batch={batch}x{args.seq_len}")
        timed, overheads = step_times(config, batch, args.seq_len, device, repeats, clock, kernels)
        baseline = timed[0]
        table[name] = overheads[1:]
        for (fmt, bits), seconds, overhead in zip(POINTS, timed, overheads, strict=True):
            tokens_per_s = batch * args.seq_len / seconds
            print(f"  {fmt:>7} {bits:>2} bit: {seconds * 1e3:8.2f} ms/step {tokens_per_s:10,.0f} tok/s  "
                  f"QAT overhead {overhead:+6.1f} %  "
                  f"{flops_per_token * tokens_per_s / 1e9:7.2f} GFLOP/s"
                  + (f"  MFU {100 * flops_per_token * tokens_per_s / (args.peak_tflops * 1e12):5.1f} %"
                     if device.type == "cuda" else ""))
        if args.quick:
            continue
        mm = matmul_flops(config, batch * args.seq_len, device)
        achieved = flops_per_token * batch * args.seq_len / baseline
        print(f"  torch.mm on the same shapes: {mm / 1e9:.2f} GFLOP/s; unquantized step reaches "
              f"{100 * achieved / mm:.0f} % of it")
    print_table(table, repeats, clock_name)


def print_table(table: dict[str, list[float]], repeats: int, clock_name: str) -> None:
    """The whole-step QAT overheads, rung × (format, bits), and the worst of each rung."""
    names = [f"{fmt}{bits}" for fmt, bits in POINTS[1:]]
    print(f"\nQAT overhead, % of the unquantized step (paired median of {repeats} interleaved steps, "
          f"{clock_name} clock, load average {os.getloadavg()[0]:.2f}):")
    print(f"  {'rung':<7}" + "".join(f"{n:>9}" for n in names) + f"{'worst':>9}")
    for rung, overheads in table.items():
        print(f"  {rung:<7}" + "".join(f"{o:+9.1f}" for o in overheads) + f"{max(overheads):+9.1f}")


if __name__ == "__main__":
    main()
