"""What a log step adds to metrics.jsonl besides the loss: MFU, gradient norm, peak memory.

All three are read at log steps only: the gradient norm is a device tensor kept from the step (reading it
is a host-device sync), MFU needs the interval's tokens/s, and the memory peaks are counters.

MFU = model FLOPs per token (6·N_matmul + attention, fwd + bwd) × tokens/s ÷ (the device's peak FLOP/s
× the number of ranks): the loop's tokens/s counts the global batch, so MFU is per GPU, the figure that
``bitlaw plan --mfu`` multiplies by one GPU's peak (dividing by one GPU's peak alone logged 320 % for an
8-GPU run at 40 %). The peak is ``train.peak_flops`` when set, else a bf16 dense figure for the GPUs
below, else null (no MFU: a CPU's peak depends on its cores, clock and vector width, and a guess would be
a wrong number).
"""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch

# Dense bf16 tensor-core peaks (no 2:4 sparsity), from the vendors' data sheets. Matched in this order
# against torch.cuda.get_device_name() (e.g. "NVIDIA H100 80GB HBM3"), so "H100 PCIe" precedes "H100".
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),   # SXM
    ("H200", 989e12),   # same compute as H100 SXM, more HBM
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("L4", 121e12),
)


def flops_per_token(d_model: int, n_layers: int, ffn_dim: int, n_heads: int, n_kv_heads: int,
                    vocab_size: int, seq_len: int) -> float:
    """Training FLOPs per token, forward + backward: 6 per weight of every matmul (the block linears and
    the output head; the embedding is a lookup) plus attention's QK^T and AV, 12·n_layers·d_model·seq_len
    (PaLM's convention, counting the full T×T square as cuDNN/flash kernels bill it)."""
    head_dim = d_model // n_heads
    kv = n_kv_heads * head_dim
    per_layer = d_model * d_model * 2 + d_model * kv * 2 + 3 * d_model * ffn_dim  # wq, wo, wk, wv, w1-3
    matmul_weights = n_layers * per_layer + d_model * vocab_size  # + the output head
    return 6.0 * matmul_weights + 12.0 * n_layers * d_model * seq_len


def model_flops_per_token(model_config: Any, seq_len: int) -> float:
    m = model_config
    return flops_per_token(m.d_model, m.n_layers, m.ffn_dim, m.n_heads, m.n_kv_heads, m.vocab_size, seq_len)


def peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """Peak FLOP/s for MFU: the configured value, the table's entry for this GPU, or None."""
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the allocator's high-water mark since the last log step (the Meter resets it there); CPU: the
    process's peak resident set since start (the kernel keeps no resettable high-water mark per window)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


class Meter:
    """The log-step fields: ``mfu`` (null without a known peak), ``grad_norm`` (before clipping),
    ``peak_memory_bytes``; ``flops_per_token`` once known, for readers who want their own peak."""

    def __init__(self, per_token: float | None, device: torch.device, peak: float | None = None,
                 world_size: int = 1):
        self.per_token, self.device, self.peak, self.world_size = per_token, device, peak, world_size

    def log_fields(self, tokens_per_s: float, grad_norm: torch.Tensor | float | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if grad_norm is not None:
            fields["grad_norm"] = float(grad_norm)
        if self.per_token is not None:
            fields["flops_per_token"] = self.per_token
            fields["mfu"] = mfu(self.per_token, tokens_per_s, self.peak, self.world_size)
        fields["peak_memory_bytes"] = peak_memory_bytes(self.device)
        if self.device.type == "cuda":  # each log step reports its own window's peak, not the run's
            torch.cuda.reset_peak_memory_stats(self.device)
        return fields


def mfu(per_token: float, tokens_per_s: float, peak: float | None, world_size: int) -> float | None:
    """Per-GPU MFU of `tokens_per_s` tokens/s over all `world_size` ranks; None without a peak."""
    return per_token * tokens_per_s / (peak * world_size) if peak else None


# metrics.jsonl fields that measure the machine, not the training: two runs of the same config differ in them
MACHINE_FIELDS = ("tokens_per_s", "mfu", "peak_memory_bytes")
