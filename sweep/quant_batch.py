"""Batched QAT update: quantize every stale switched-on weight that shares a quantizer in one computation.

A small model has many small quantized linears (14 at the 2-layer CPU rungs), and quantizing each one
separately costs ~10 tensor ops apiece, whose fixed per-op cost dominated the QAT step overhead on CPU. All
quantizers work on independent blocks of ``block_size`` weights, so the blocks of every tensor that shares
(kind, bits, block size, scale mode, binary mean, dtype, device) are concatenated into one
(n_blocks, block_size) matrix and quantized at once. K-means codebooks differ per tensor, so each block
looks its tensor's codebook up by row.

Two paths give the per-tensor reference's deltas (``sweep.quant.fake_quantize``) bit for bit
(tests/test_quant_batched.py, tests/test_quant_kernels.py), for every format and width:
- float32 on the CPU: the block scales by torch, then one fused pass per chunk (sweep/quant_kernels.py);
- anything else (CUDA, other dtypes, no numba): the per-tensor ops on more rows, k-means by one
  ``searchsorted`` of each row's midpoints (one pass at every width, where counting with k - 1 compares
  took 15 passes and ~60 launches per matrix at 4 bits). Why not ``torch.compile`` of the update on CUDA:
  inductor reorders the absmean reduction and may fuse ``w / s`` differently, so exactness against the
  eager reference would rest on codegen details; the chunk membership changes whenever a module is
  switched or its weight stays put (recompiles); and the eager path is already ~10 launches per chunk.
Both write ``q(w) - w`` straight into one buffer per chunk whose rows are the members' ``ste_delta``.

No host-device sync: nothing here reads a device value (version counters and addresses are host-side,
the per-block codebooks are built by ``expand`` and ``cat``), so the update queues on a GPU behind the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sweep import quant_kernels
from sweep.quant import QuantLinear, block_scales, fake_quantize, to_bf16_precision

# Weights quantized per batched computation. CPU: small enough that the chunk's copy, scales and deltas stay
# in the L2 cache (one multi-MB batch was 2x slower than per tensor at r786k; with the fused kernels the
# r786k k-means 2-bit update took 2.5 ms at 2^14-2^16, 4.4 ms at 2^18 and up). CUDA: large, so a step makes
# few launches (a GPU-size matrix would otherwise be a chunk of its own), yet bounded so the temporaries
# (~24 B per weight: the copy, the normalised weights, int64 codes, the gathered values) stay ~0.4 GB.
CHUNK_ELEMENTS = 2**16
CUDA_CHUNK_ELEMENTS = 2**24

Member = tuple[QuantLinear, tuple]  # a module and its _version_key(), read once per update


def chunk_elements(device: torch.device) -> int:
    return CHUNK_ELEMENTS if device.type == "cpu" else CUDA_CHUNK_ELEMENTS


def _weight(module: QuantLinear) -> torch.Tensor:
    # the dict, not module.weight: nn.Module.__getattr__ costs ~1 µs, read several times per module per step
    return module._parameters["weight"]


def _group_key(module: QuantLinear) -> tuple:
    w = _weight(module)
    return (module.kind, module.bits, module.block_size, module.scale_mode, module.binary_mean, w.dtype,
            w.device)


@dataclass
class ChunkCache:
    """What a chunk of modules reuses from one update to the next; its first module keeps it
    (``QuantLinear.chunk_cache``), keyed by the members' identities in order.

    - ``tables``, ``mids``: each block's sorted codebook (n_blocks, k) and its midpoints (n_blocks, k-1)
      (k-means), rebuilt only when a member's centroids change (a fit or a load; under DDP only if buffers
      are broadcast, which sweep/distributed.py turns off): rebuilding them was a quarter of an update.
    - ``deltas``: one (n_blocks, B) buffer whose rows are the members' ``ste_delta`` buffers (views), so
      the update writes every delta in place, with no per-module copy.
    """

    members: tuple[int, ...]
    codebook_key: tuple | None = None
    tables: torch.Tensor | None = None
    mids: torch.Tensor | None = None
    deltas: torch.Tensor | None = None
    pointers: tuple[int, ...] = ()  # each member's ste_delta.data_ptr() while it is a view of deltas
    codebook_builds: int = 0  # how often tables were (re)built: the cache's misses, for tests


def chunk_cache(modules: list[QuantLinear]) -> ChunkCache:
    members = tuple(id(m) for m in modules)
    cache = modules[0].chunk_cache
    if not isinstance(cache, ChunkCache) or cache.members != members:
        cache = modules[0].chunk_cache = ChunkCache(members)
    return cache


def block_codebooks(modules: list[QuantLinear], counts: list[int],
                    keys: list[tuple] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tables, midpoints): each block's sorted codebook (n_blocks, k) and its midpoints (n_blocks, k-1),
    cached in the chunk's ChunkCache until a member's centroids change. `keys`: the members'
    ``_version_key()``, whose third and fourth fields are the centroids' version and address."""
    cache = chunk_cache(modules)
    keys = keys if keys is not None else [m._version_key() for m in modules]
    key = tuple(k[2:4] for k in keys)
    if cache.codebook_key != key:
        # expand + cat, not repeat_interleave with a tensor of counts: that copies the counts to the device
        # and reads the output size back, two syncs per chunk
        tables = torch.cat([m.centroids.expand(n, -1) for m, n in zip(modules, counts, strict=True)])
        cache.tables = tables
        cache.mids = ((tables[:, 1:] + tables[:, :-1]) / 2).contiguous()  # as sweep.quant.midpoints, per row
        cache.codebook_key = key
        cache.codebook_builds += 1
    return cache.tables, cache.mids


def delta_buffer(modules: list[QuantLinear], blocks: torch.Tensor, counts: list[int]) -> torch.Tensor | None:
    """The chunk's shared delta buffer, its rows the members' ``ste_delta``; made on the chunk's first
    update, when no member has a delta yet. None when a member's buffer is its own (it quantized itself in
    forward, or a chunk of a different membership did): that chunk then writes a temporary and copies."""
    cache = chunk_cache(modules)
    if cache.deltas is not None and cache.pointers == tuple(m.ste_delta.data_ptr() for m in modules):
        return cache.deltas
    if any(m.ste_delta.shape == m.weight.shape for m in modules):
        return None
    cache.deltas = torch.empty_like(blocks)
    for module, rows in zip(modules, cache.deltas.split(counts), strict=True):
        module.ste_delta = rows.view_as(module.weight)
    cache.pointers = tuple(m.ste_delta.data_ptr() for m in modules)
    return cache.deltas


def fused_delta(blocks: torch.Tensor, modules: list[QuantLinear], counts: list[int], out: torch.Tensor,
                keys: list[tuple] | None = None) -> None:
    """out = ``q(w) - w`` of the chunk's (n_blocks, B) float32 CPU blocks by the one-pass kernels
    (sweep/quant_kernels.py); the block scales (and binary means) by the torch ops of ``sweep.quant.encode``,
    so the bits agree with the torch path."""
    first = modules[0]
    kind, bits, block_size = first.kind, first.bits, first.block_size
    if kind == "binary":
        means = to_bf16_precision(blocks.mean(-1, keepdim=True)) if first.binary_mean else None
        centred = blocks - means if means is not None else blocks
        scales = to_bf16_precision(centred.abs().mean(-1, keepdim=True).clamp_min(1e-8))
        quant_kernels.binary_delta(blocks, scales, means, out)
        return
    scales = block_scales(blocks, block_size, first.scale_mode).squeeze(-2)  # (n_blocks, 1)
    if kind == "kmeans":
        quant_kernels.kmeans_delta(blocks, scales, *block_codebooks(modules, counts, keys), out)
        return
    levels = 1 if kind == "ternary" else 2 ** (bits - 1) - 1
    quant_kernels.uniform_delta(blocks, scales, levels, out)


def torch_delta(blocks: torch.Tensor, modules: list[QuantLinear], counts: list[int], out: torch.Tensor,
                keys: list[tuple] | None = None) -> None:
    """out = ``q(w) - w`` of the chunk's (n_blocks, B) blocks by torch ops: any device and dtype.

    K-means: the code is ``searchsorted`` of the normalised weight in its row's midpoints (left side: the
    number of midpoints strictly below it, which is ``bucketize`` as ``sweep.quant.nearest_centroid``), its
    value a gather from the row's codebook, times the same bf16 block scale: ``decode(encode(w))``'s ops."""
    first = modules[0]
    kind, bits, block_size, mode = first.kind, first.bits, first.block_size, first.scale_mode
    if kind == "kmeans":
        tables, mids = block_codebooks(modules, counts, keys)
        scales = block_scales(blocks, block_size, mode).squeeze(-2)  # (n_blocks, 1)
        normalised = blocks / scales
        quantized = torch.gather(tables, 1, torch.searchsorted(mids, normalised)).mul_(scales)
    else:
        quantized = fake_quantize(blocks, kind, bits, block_size, mode, binary_mean=first.binary_mean)
    torch.sub(quantized, blocks, out=out)  # q - w, as the per-tensor path


def _chunks(members: list[Member], max_elements: int) -> list[list[Member]]:
    """Consecutive runs of (module, version key) of at most `max_elements` weights in all (at least one
    module each)."""
    chunks: list[list[Member]] = []
    size = max_elements
    for member in members:
        n = _weight(member[0]).numel()
        if size + n > max_elements:
            chunks.append([])
            size = 0
        chunks[-1].append(member)
        size += n
    return chunks


def _update_chunk(modules: list[QuantLinear], keys: list[tuple], kernels: bool) -> None:
    """Quantize one chunk; `keys`: the members' ``_version_key()``, read once by ``update``."""
    block_size = modules[0].block_size
    weights = [_weight(m) for m in modules]  # under no_grad: the reshaped copies need no detach
    counts = [w.numel() // block_size for w in weights]
    blocks = torch.cat([w.reshape(-1, block_size) for w in weights])  # (n_blocks, B)
    shared = delta_buffer(modules, blocks, counts)
    out = shared if shared is not None else torch.empty_like(blocks)
    if kernels and quant_kernels.usable(blocks):
        fused_delta(blocks, modules, counts, out, keys)
    else:
        torch_delta(blocks, modules, counts, out, keys)
    if shared is not None:  # the deltas are already in place
        for module, key in zip(modules, keys, strict=True):
            module.mark_current(key)
        return
    for module, w, delta, key in zip(modules, weights, out.split(counts), keys, strict=True):
        module.store_delta(delta.view_as(w), key)


@torch.no_grad()
def update(quantized: list[tuple[str, QuantLinear]], max_elements: int | None = None,
           kernels: bool = True) -> None:
    """Recompute ``ste_delta = q(w) - w`` for every switched-on module whose weight or codebook
    changed since its last quantization, batched per quantizer group in chunks of `max_elements` weights
    (default: ``chunk_elements`` of the device). `kernels`: use the fused CPU kernels where they apply
    (False: the torch path everywhere, which is what runs on a GPU)."""
    groups: dict[tuple, list[Member]] = {}
    for _, module in quantized:
        if not module.enabled:
            continue
        key = module._version_key()  # read once: the chunk marks the module current with it
        if module._delta_key != key:
            groups.setdefault(_group_key(module), []).append((module, key))
    for members in groups.values():
        limit = max_elements or chunk_elements(_weight(members[0][0]).device)
        for chunk in _chunks(members, limit):
            modules, keys = zip(*chunk, strict=True)
            _update_chunk(list(modules), list(keys), kernels)
