"""The fused CPU kernels (sweep/quant_kernels.py) give the torch path's deltas bit for bit, edge cases
included, and the chunk's shared delta buffer stays in place across updates, on either path."""

from __future__ import annotations

import pytest
import torch
from test_quant_batched import CASES, make_modules, train_losses

from sweep import quant, quant_batch, quant_kernels

needs_numba = pytest.mark.skipif(not quant_kernels.AVAILABLE, reason="numba is not importable")
PATHS = [pytest.param(True, id="kernels", marks=needs_numba), pytest.param(False, id="torch")]


def bits_of(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)  # compares the sign of zero too


def chunk_of(modules: list[tuple[str, quant.QuantLinear]]) -> tuple[torch.Tensor, list, list[int]]:
    members = [m for _, m in modules]
    block = members[0].block_size
    counts = [m.weight.numel() // block for m in members]
    blocks = torch.cat([m.weight.detach().reshape(-1, block) for m in members])
    return blocks, members, counts


@needs_numba
@pytest.mark.parametrize("fmt,bits,scale,mean", CASES)
def test_fused_delta_equals_torch_delta(fmt: str, bits: int, scale: str, mean: bool) -> None:
    modules = make_modules(quant.QuantConfig(format=fmt, bits=bits, scale=scale, binary_mean=mean), seed=5)
    blocks, members, counts = chunk_of(modules)
    assert quant_kernels.usable(blocks)
    fused, reference = torch.full_like(blocks, float("nan")), torch.full_like(blocks, float("nan"))
    quant_batch.fused_delta(blocks, members, counts, fused)
    quant_batch.torch_delta(blocks, members, counts, reference)
    assert torch.equal(bits_of(fused), bits_of(reference))


@needs_numba
def test_kmeans_ties_go_to_the_lower_centroid() -> None:
    """A weight exactly on a midpoint takes the lower centroid, as ``bucketize``; scales that are powers of
    two make ``w / s`` exact, so the ties really are ties."""
    table = torch.tensor([-1.5, -0.5, 0.25, 1.0])
    mids = (table[1:] + table[:-1]) / 2
    scales = torch.tensor([[1.0], [0.5], [2.0**-10]])
    x = torch.cat([mids, table, torch.tensor([-0.0, 0.0, -9.0, 9.0, 1e-40, -1e-40])])  # denormals too
    blocks = (x * scales).contiguous()  # (3, 13)
    out = torch.empty_like(blocks)
    tables = table.expand(3, -1).contiguous()
    quant_kernels.kmeans_delta(blocks, scales, tables, mids.expand(3, -1).contiguous(), out)
    expected = table[torch.bucketize(blocks / scales, mids)] * scales - blocks
    assert torch.equal(bits_of(out), bits_of(expected))
    assert torch.equal(out[0, :3] + blocks[0, :3], table[:3])  # the ties: lower centroid


@needs_numba
def test_uniform_rounds_half_to_even_and_clamps() -> None:
    levels = 3  # 3-bit grid -3..3
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 3.49, 4.0, -7.0, -0.0, 0.0]) / levels
    scales = torch.tensor([[1.0], [0.25]])
    blocks = (x * scales).contiguous()
    out = torch.empty_like(blocks)
    quant_kernels.uniform_delta(blocks, scales, levels, out)
    codes = torch.clamp(torch.round(blocks / scales * levels), -levels, levels)
    expected = codes * (scales / levels) - blocks
    assert torch.equal(bits_of(out), bits_of(expected))
    assert (out[0] + blocks[0]).tolist()[:6] == pytest.approx([0.0, 2 / 3, 2 / 3, 0.0, -2 / 3, 1.0])


@needs_numba
def test_binary_sign_of_zero_and_mean() -> None:
    blocks = torch.tensor([[-0.0, 0.0, 0.2, -0.3], [0.1, 0.1, 0.3, 0.5]])
    scales = torch.tensor([[0.25], [0.125]])
    means = torch.tensor([[0.0], [0.1]])  # row 1: weights equal to the mean take +s, as ``>= 0``
    for row_means in (None, means):
        out = torch.empty_like(blocks)
        quant_kernels.binary_delta(blocks, scales, row_means, out)
        centred = blocks - row_means if row_means is not None else blocks
        values = torch.where(centred >= 0, scales, -scales) + (row_means if row_means is not None else 0)
        assert torch.equal(bits_of(out), bits_of(values - blocks))


@pytest.mark.parametrize("kernels", PATHS)
@pytest.mark.parametrize("fmt,bits,scale,mean", CASES)
def test_chunk_deltas_are_rows_of_one_buffer_kept_across_updates(fmt: str, bits: int, scale: str, mean: bool,
                                                                 kernels: bool) -> None:
    modules = make_modules(quant.QuantConfig(format=fmt, bits=bits, scale=scale, binary_mean=mean))
    quant_batch.update(modules, kernels=kernels)
    members = [m for _, m in modules]
    cache = members[0].chunk_cache
    assert isinstance(cache, quant_batch.ChunkCache) and cache.deltas is not None
    arena = cache.deltas.untyped_storage().data_ptr()
    assert all(m.ste_delta.untyped_storage().data_ptr() == arena for m in members)
    pointers = [m.ste_delta.data_ptr() for m in members]
    with torch.no_grad():
        for m in members:
            m.weight.mul_(0.9)
    quant_batch.update(modules, kernels=kernels)
    assert [m.ste_delta.data_ptr() for m in members] == pointers  # in place: compiled graphs keep them
    for m in members:
        q = quant.fake_quantize(m.weight, m.kind, m.bits, m.block_size, m.scale_mode, m.centroids,
                                m.binary_mean)
        assert torch.equal(bits_of(m.ste_delta), bits_of(q - m.weight))


@needs_numba
def test_a_new_chunk_membership_writes_the_old_buffers_in_place() -> None:
    """Disabling a module changes the chunk; its members' existing buffers are then filled by copy."""
    modules = make_modules(quant.QuantConfig(format="uniform", bits=4))
    quant_batch.update(modules)
    modules[0][1].set_enabled(False)
    rest = modules[1:]
    pointers = [m.ste_delta.data_ptr() for _, m in rest]
    with torch.no_grad():
        for _, m in rest:
            m.weight.add_(0.01)
    quant_batch.update(modules)
    assert [m.ste_delta.data_ptr() for _, m in rest] == pointers
    for _, m in rest:
        q = quant.fake_quantize(m.weight, m.kind, m.bits, m.block_size, m.scale_mode)
        assert torch.equal(bits_of(m.ste_delta), bits_of(q - m.weight))


def test_float64_weights_take_the_torch_path() -> None:
    config = quant.QuantConfig(format="kmeans", bits=3)
    modules = make_modules(config)
    for _, m in modules:
        m.double()
        m.set_enabled(True)
    blocks, members, counts = chunk_of(modules)
    assert not quant_kernels.usable(blocks)
    quant_batch.update(modules)
    for m in members:
        assert m.ste_delta.dtype == torch.float64
        q = quant.fake_quantize(m.weight, m.kind, m.bits, m.block_size, m.scale_mode, m.centroids)
        assert torch.equal(m.ste_delta, q - m.weight)


@needs_numba
@pytest.mark.parametrize("fmt,bits", [("kmeans", 2), ("kmeans", 4), ("uniform", 1), ("uniform", 3)])
def test_training_losses_equal_without_the_kernels(fmt: str, bits: int) -> None:
    fused = train_losses(fmt, bits, batched_update=True)
    assert train_losses(fmt, bits, batched_update=True, kernels=False) == fused


@pytest.mark.parametrize("kernels", PATHS)
def test_kmeans_ties_go_to_the_lower_centroid_through_the_update(kernels: bool) -> None:
    """Both paths of the update (the kernels' selects, the torch path's searchsorted) send a normalised
    weight exactly on a midpoint to the lower centroid, as the per-tensor ``bucketize``. The codebook and
    the rows' absmax (1, 1/2, 2^-10) are powers of two or exact in bf16, so ``w / s`` hits the midpoints."""
    table = torch.tensor([-1.0, -0.5, 0.25, 1.0])
    mids = (table[1:] + table[:-1]) / 2
    row = torch.cat([mids, table, torch.tensor([-0.0, 0.0, 1e-40, -1e-40])])
    row = torch.cat([row, torch.zeros(64 - len(row))])
    config = quant.QuantConfig(format="kmeans", bits=2, scale="absmax")
    module = quant.QuantLinear(64, 3, config)
    with torch.no_grad():
        module.weight.copy_(row * torch.tensor([[1.0], [0.5], [2.0**-10]]))
        module.centroids.copy_(table)
    module.set_enabled(True)
    quant_batch.update([("m", module)], kernels=kernels)
    expected = quant.fake_quantize(module.weight, "kmeans", 2, 64, "absmax", module.centroids) - module.weight
    assert torch.equal(bits_of(module.ste_delta), bits_of(expected))
    assert torch.equal((module.ste_delta + module.weight)[0, :3], table[:3])  # the ties: lower centroid
