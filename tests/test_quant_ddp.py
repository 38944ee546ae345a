"""The QAT update under DDP (sweep/distributed.py's wrap): no buffer broadcast per step, the quantizer's
caches hit across steps, and every rank holds the same quantizer state all the same.

Two gloo processes train a tiny quantized model for a few steps as the loop does (quant_batch.update, then
forward/backward through the DDP wrapper, AdamW). Counted per rank: how often a chunk rebuilt its per-block
codebooks (the cache misses; the first update builds them once), and how often a module re-quantized
itself in forward because its delta was stale (it never should: the update ran just before). A probe
buffer set to the rank after wrapping tells whether DDP broadcast buffers before a forward (it overwrites
rank 1's with rank 0's): DDP's default does, which the second case shows. Before torch 2.13 that
broadcast also bumped the buffers' version counters, so every cache missed every step; 2.13 preserves
them, so the miss counts are checked for the wrapper the training uses, and the broadcast by the probe.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from sweep import distributed, quant, quant_batch
from sweep.model import Llama, ModelConfig

pytestmark = pytest.mark.integration  # two processes, a few seconds
STEPS = 4


def _worker(rank: int, world_size: int, port: int, sync_buffers: bool, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        config = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=256,
                             max_seq_len=32)
        model = Llama(config)
        q = quant.QuantConfig(format="kmeans", bits=2)
        quantized = quant.prepare(model, q)
        quant.switch_on(quantized, q, seed=0)
        model.register_buffer("probe", torch.zeros(1))
        trainable = distributed.wrap(model, torch.device("cpu"), sync_buffers=sync_buffers)
        model.probe.fill_(rank)  # differs between ranks until a broadcast overwrites rank 1's
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        tokens = torch.randint(0, 256, (2 * world_size, 33), generator=torch.Generator().manual_seed(1))
        x = tokens[rank::world_size]  # disjoint rows of one global batch, as sweep/data.py
        requantized_in_forward = 0
        for _ in range(STEPS):
            quant_batch.update(quantized)
            keys = [m._delta_key for _, m in quantized]
            loss = F.cross_entropy(trainable(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
            stale = [m._delta_key != k for (_, m), k in zip(quantized, keys, strict=True)]
            requantized_in_forward += sum(stale)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        quant_batch.update(quantized)
        caches = [m.chunk_cache for _, m in quantized if isinstance(m.chunk_cache, quant_batch.ChunkCache)]
        state = torch.cat([torch.cat([m.centroids, m.ste_delta.flatten(), m.weight.detach().flatten()])
                           for _, m in quantized])
        result = {"codebook_builds": sum(c.codebook_builds for c in caches), "chunks": len(caches),
                  "requantized_in_forward": int(requantized_in_forward), "probe": float(model.probe),
                  "state": state.view(torch.int32).tolist()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def run_ranks(tmp_path: Path, sync_buffers: bool) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, port, sync_buffers, str(tmp_path)), nprocs=2, join=True)
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]


def test_the_quantizer_cache_hits_across_steps_under_ddp(tmp_path) -> None:
    ranks = run_ranks(tmp_path, sync_buffers=False)
    assert [r["probe"] for r in ranks] == [0.0, 1.0]  # no buffer broadcast before forward
    for r in ranks:
        assert r["chunks"] >= 1
        assert r["codebook_builds"] == r["chunks"]  # built at the first update, then hit at every step
        assert r["requantized_in_forward"] == 0
    # no broadcast, yet both ranks hold the same centroids, deltas and weights, bit for bit
    assert ranks[0]["state"] == ranks[1]["state"]


def test_ddp_default_broadcasts_the_buffers_every_forward(tmp_path) -> None:
    """What the default did: rank 0's buffers, the whole STE delta included, copied to every rank."""
    ranks = run_ranks(tmp_path, sync_buffers=True)
    assert [r["probe"] for r in ranks] == [0.0, 0.0]
    assert ranks[0]["state"] == ranks[1]["state"]
