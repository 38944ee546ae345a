"""Fused CPU kernels for the batched QAT update: ``q(w) - w`` in one pass over the weights.

The torch path (``sweep.quant_batch.torch_delta``) quantizes with ~10 elementwise ops per weight, each
streaming the weights through memory: on a CPU that cost 7-14 ns per weight, 7-18 % of a QAT step. These
kernels read each weight once and write its delta once (numba, compiled on first use and cached on disk).

They are the same arithmetic as the torch definitions, operation for operation in float32, so the deltas are
equal bit for bit (tests/test_quant_kernels.py checks every quantizer against ``sweep.quant.fake_quantize``):
- the block scales come from torch (``block_scales``): a mean's summation order is torch's, not ours;
- normalising is a true division ``w / s``, never a multiply by ``1 / s``;
- uniform rounds half to even (``np.rint`` = ``torch.round``) and de-normalises with ``s / levels``;
- k-means takes the centroid after the last midpoint strictly below the normalised weight (``bucketize``'s
  ties-to-the-lower rule) by a chain of selects over a block held in L1, which the compiler vectorizes:
  one pass over memory at every width;
- ``fastmath`` is off, so LLVM neither contracts ``v * s - w`` into an FMA nor reorders anything.
Float literals are float32 on purpose: a float64 constant would promote the arithmetic and change the bits.

numba is imported on first use, not with this module: ``import numba`` costs ~0.3 s, which the CLI and the
GPU path need not pay. Used for float32 CPU tensors when numba is importable; anything else takes the torch
path of sweep/quant_batch.py. The kernels run on one thread (the demo's jobs run one thread each).
"""

from __future__ import annotations

import functools
import importlib.util
from types import SimpleNamespace

import numpy as np
import torch

AVAILABLE = importlib.util.find_spec("numba") is not None


def usable(blocks: torch.Tensor) -> bool:
    """Whether the fused kernels can take these (n_blocks, B) weights: float32 on the CPU, numba present."""
    return AVAILABLE and blocks.device.type == "cpu" and blocks.dtype == torch.float32


def _uniform_delta(w, scales, levels, out):  # pragma: no cover - compiled
    n, block = w.shape
    top = np.float32(levels)
    for i in range(n):
        s = scales[i]
        step = s / top
        for j in range(block):
            c = np.rint((w[i, j] / s) * top)
            c = min(max(c, -top), top)
            out[i, j] = c * step - w[i, j]


def _binary_delta(w, scales, means, use_means, out):  # pragma: no cover - compiled
    n, block = w.shape
    zero = np.float32(0.0)
    for i in range(n):
        s = scales[i]
        m = means[i] if use_means else zero
        for j in range(block):
            if use_means:
                v = s if w[i, j] - m >= zero else -s
                out[i, j] = (v + m) - w[i, j]
            else:
                out[i, j] = (s if w[i, j] >= zero else -s) - w[i, j]


def _kmeans_delta(w, scales, tables, mids, out):  # pragma: no cover - compiled
    # w (n, B); scales (n,); tables (n, k) sorted codebook per block; mids (n, k - 1)
    n, block = w.shape
    k = tables.shape[1]
    x = np.empty(block, dtype=np.float32)
    v = np.empty(block, dtype=np.float32)
    for i in range(n):
        s = scales[i]
        for j in range(block):
            x[j] = w[i, j] / s
            v[j] = tables[i, 0]
        for m in range(k - 1):  # sorted midpoints: the last one strictly below x picks the centroid
            mid, value = mids[i, m], tables[i, m + 1]
            for j in range(block):
                v[j] = value if x[j] > mid else v[j]
        for j in range(block):
            out[i, j] = v[j] * s - w[i, j]


@functools.cache
def kernels() -> SimpleNamespace:
    """The compiled kernels, loaded once per process (from numba's on-disk cache after the first run)."""
    import numba

    jit = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
    return SimpleNamespace(uniform=jit(_uniform_delta), binary=jit(_binary_delta), kmeans=jit(_kmeans_delta))


def _flat(scales: torch.Tensor) -> np.ndarray:
    return scales.reshape(-1).contiguous().numpy()


def uniform_delta(blocks: torch.Tensor, scales: torch.Tensor, levels: int, out: torch.Tensor) -> None:
    """out = ``q(w) - w`` of the symmetric grid -levels..levels; blocks and out (n_blocks, B), contiguous,
    scales (n_blocks, 1)."""
    kernels().uniform(blocks.numpy(), _flat(scales), levels, out.numpy())


def binary_delta(blocks: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None,
                 out: torch.Tensor) -> None:
    """out = ``q(w) - w`` of sign(w - m)·s + m (m = 0 without means)."""
    flat_means = _flat(means) if means is not None else np.zeros(1, dtype=np.float32)
    kernels().binary(blocks.numpy(), _flat(scales), flat_means, means is not None, out.numpy())


def kmeans_delta(blocks: torch.Tensor, scales: torch.Tensor, tables: torch.Tensor, mids: torch.Tensor,
                 out: torch.Tensor) -> None:
    """out = ``q(w) - w`` with block i's sorted codebook ``tables[i]`` and its midpoints ``mids[i]``."""
    kernels().kmeans(blocks.numpy(), _flat(scales), tables.numpy(), mids.numpy(), out.numpy())
