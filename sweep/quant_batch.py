"""Batched QAT update: quantize every stale switched-on weight that shares a quantizer in one computation.

A small model has many small quantized linears (14 at the 2-layer CPU rungs), and quantizing each one
separately costs ~10 tensor ops apiece, whose fixed per-op cost dominated the QAT step overhead on CPU. All
quantizers work on independent blocks of ``block_size`` weights, so the blocks of every tensor that shares
(kind, bits, block size, scale mode, binary mean, dtype, device) are concatenated into one
(n_blocks, block_size) matrix and quantized at once. The ops are the per-tensor ones (``sweep.quant``)
applied to more rows: elementwise ops and the per-block reductions give the same values bit for bit.
K-means codebooks differ per tensor, so each block looks its tensor's codebook up by row.
"""

from __future__ import annotations

import torch

from sweep.quant import QuantLinear, block_scales, fake_quantize

# Weights quantized per batched computation: small enough that its few temporaries stay in the L2 cache.
# One multi-MB batch was 2x slower than per tensor at r786k (every op streams memory); 2^16 measured best.
CHUNK_ELEMENTS = 2**16


def _group_key(module: QuantLinear) -> tuple:
    w = module.weight
    return (module.kind, module.bits, module.block_size, module.scale_mode, module.binary_mean, w.dtype,
            w.device)


def block_codebooks(modules: list[QuantLinear], counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tables, midpoints): each block's sorted codebook (n_blocks, k) and its midpoints (n_blocks, k-1).

    They change only when a codebook does (a fit or a load), so the chunk's first module keeps them, keyed
    by every member's identity and centroid version: rebuilding them was a quarter of a batched update."""
    key = tuple((id(m), m.centroids._version, m.centroids.data_ptr()) for m in modules)
    cached = getattr(modules[0], "_block_codebooks", None)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    centroids = torch.stack([m.centroids for m in modules])
    tables = centroids.repeat_interleave(torch.tensor(counts, device=centroids.device), 0).contiguous()
    mids = ((tables[:, 1:] + tables[:, :-1]) / 2).contiguous()  # as sweep.quant.midpoints, per row
    modules[0]._block_codebooks = (key, tables, mids)
    return tables, mids


def fake_quantize_kmeans_blocks(blocks: torch.Tensor, scale_mode: str, tables: torch.Tensor,
                                mids: torch.Tensor) -> torch.Tensor:
    """K-means fake quantization of (n_blocks, B) blocks, block i with the sorted codebook ``tables[i]``
    (midpoints ``mids[i]``).

    Equals ``sweep.quant.fake_quantize`` per tensor bit for bit: the nearest centroid's index is the number
    of midpoints strictly below the normalised weight (what ``bucketize`` returns, ties to the lower
    centroid), its value a pure lookup, times the same bf16 block scale. The count is taken in float as
    sum_j max(sign(x - m_j), 0): for finite IEEE floats x - m is 0 only when x == m and never has the wrong
    sign (gradual underflow; torch.set_flush_denormal is off by default), so each term is exactly x > m_j.
    Float sign/clamp in place beat a bool compare per midpoint (measured on CPU: 2-3x, bool tensors and
    their casts are slow) and a per-row searchsorted (2-4x); in-place ops also spare the page faults of a
    fresh multi-MB tensor per op at the larger rungs."""
    block_size = blocks.shape[-1]
    scales = block_scales(blocks, block_size, scale_mode).squeeze(-2)  # (n_blocks, 1)
    normalised = blocks / scales
    codes = torch.zeros_like(normalised)
    term = torch.empty_like(normalised)
    for j in range(mids.shape[1]):
        codes += torch.sub(normalised, mids[:, j:j + 1], out=term).sign_().clamp_min_(0)
    return torch.gather(tables, 1, codes.long()).mul_(scales)


def _chunks(modules: list[QuantLinear], max_elements: int) -> list[list[QuantLinear]]:
    """Consecutive runs of modules of at most `max_elements` weights in all (at least one module each)."""
    chunks: list[list[QuantLinear]] = []
    size = max_elements
    for module in modules:
        n = module.weight.numel()
        if size + n > max_elements:
            chunks.append([])
            size = 0
        chunks[-1].append(module)
        size += n
    return chunks


def _update_chunk(modules: list[QuantLinear]) -> None:
    first = modules[0]
    kind, bits, block_size, mode = first.kind, first.bits, first.block_size, first.scale_mode
    weights = [m.weight.detach() for m in modules]
    counts = [w.numel() // block_size for w in weights]
    blocks = torch.cat([w.reshape(-1, block_size) for w in weights])  # (n_blocks, B)
    if kind == "kmeans":
        quantized_blocks = fake_quantize_kmeans_blocks(blocks, mode, *block_codebooks(modules, counts))
    else:
        quantized_blocks = fake_quantize(blocks, kind, bits, block_size, mode, binary_mean=first.binary_mean)
    deltas = quantized_blocks.sub_(blocks).split(counts)  # q - w, as the per-tensor path
    for module, w, delta in zip(modules, weights, deltas, strict=True):
        module.store_delta(delta.view_as(w))


@torch.no_grad()
def update(quantized: list[tuple[str, QuantLinear]], max_elements: int = CHUNK_ELEMENTS) -> None:
    """Recompute ``ste_delta = q(w) - w`` for every switched-on module whose weight or codebook
    changed since its last quantization, batched per quantizer group in chunks of `max_elements`."""
    groups: dict[tuple, list[QuantLinear]] = {}
    for _, module in quantized:
        if module.enabled and module._delta_key != module._version_key():
            groups.setdefault(_group_key(module), []).append(module)
    for modules in groups.values():
        for chunk in _chunks(modules, max_elements):
            _update_chunk(chunk)
