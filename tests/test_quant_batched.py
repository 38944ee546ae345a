"""The batched QAT update (sweep/quant_batch.py) gives the per-tensor fake-quantized weights bit for bit, on
both of its paths: the fused CPU kernels and the torch path that runs on a GPU (run here on the CPU)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from sweep import quant, quant_batch
from sweep.model import Llama, ModelConfig

SHAPES = [(64, 64), (32, 64), (64, 128), (128, 64), (192, 128)]  # q/k/v/o and SwiGLU shapes, mixed


def make_modules(config: quant.QuantConfig, seed: int = 0) -> list[tuple[str, quant.QuantLinear]]:
    torch.manual_seed(seed)
    modules = []
    for index, (out_f, in_f) in enumerate(SHAPES):
        module = quant.QuantLinear(in_f, out_f, config)
        with torch.no_grad():
            module.weight.normal_(0, 0.05 * (index + 1))
            module.weight[0, :config.block_size] = 0  # an all-zero block: the clamped scale
        modules.append((f"m{index}", module))
    quant.switch_on(modules, config, seed=3)
    return modules


def per_tensor(modules: list[tuple[str, quant.QuantLinear]]) -> list[torch.Tensor]:
    """The fake-quantized weights and STE buffers of the per-tensor path (sweep/quant.py)."""
    out = []
    for _, m in modules:
        out.append(quant.fake_quantize(m.weight, m.kind, m.bits, m.block_size, m.scale_mode, m.centroids,
                                       m.binary_mean))
        m._delta_key = None
        m.update_quantized()
        out.append(m.ste_weight().clone())
    return out


# every quantizer at 1-4 bits, both scale modes; the binary mean where it exists (binary, 1-bit uniform)
POINTS = [*itertools.product(("kmeans", "uniform"), (1, 2, 3, 4)), ("binary", 1), ("ternary", 2)]
CASES = [(fmt, bits, scale, mean)
         for fmt, bits in POINTS
         for scale in ("absmean", "absmax")
         for mean in ((False, True) if quant.quantizer_kind(fmt, bits) == "binary" else (False,))]


@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "torch"])
@pytest.mark.parametrize("fmt,bits,scale,mean", CASES)
def test_batched_update_equals_per_tensor(fmt: str, bits: int, scale: str, mean: bool, kernels: bool) -> None:
    config = quant.QuantConfig(format=fmt, bits=bits, scale=scale, binary_mean=mean)
    modules = make_modules(config)
    expected = per_tensor(modules)
    for max_elements in (quant_batch.CHUNK_ELEMENTS, 8192):  # one batch; several chunks, a lone tensor
        for _, m in modules:
            m._delta_key = None
            m.ste_delta.zero_()
        quant_batch.update(modules, max_elements, kernels=kernels)
        check(modules, expected, (fmt, bits, scale, mean, max_elements, kernels))


def check(modules: list[tuple[str, quant.QuantLinear]], expected: list[torch.Tensor], case: tuple) -> None:
    for index, (_, m) in enumerate(modules):
        fq, ste = expected[2 * index], expected[2 * index + 1]
        assert torch.equal(m.ste_weight(), ste), (case, index)
        # forward uses w + (q - w); its bits must match the per-tensor path's, sign of zero included
        assert torch.equal(m.ste_weight().view(torch.int32), ste.view(torch.int32))
        assert torch.equal(fq, quant.fake_quantize(m.weight, m.kind, m.bits, m.block_size, m.scale_mode,
                                                   m.centroids, m.binary_mean))


def test_batched_update_skips_fresh_and_disabled_modules() -> None:
    config = quant.QuantConfig(format="kmeans", bits=2)
    modules = make_modules(config)
    quant_batch.update(modules)
    buffers = [m.ste_delta.data_ptr() for _, m in modules]
    modules[1][1].set_enabled(False)
    with torch.no_grad():
        modules[2][1].weight.mul_(1.5)  # only this one is stale
    before = [m.ste_delta.clone() for _, m in modules]
    quant_batch.update(modules)
    assert [m.ste_delta.data_ptr() for _, m in modules] == buffers  # written in place
    for index, (_, m) in enumerate(modules):
        if index != 2:
            assert torch.equal(m.ste_delta, before[index])
    m = modules[2][1]
    expected = m.weight + (quant.fake_quantize(m.weight, m.kind, m.bits, m.block_size, m.scale_mode,
                                               m.centroids) - m.weight)
    assert torch.equal(m.ste_weight(), expected)


def train_losses(fmt: str, bits: int, batched_update: bool, steps: int = 6,
                 kernels: bool = True) -> list[float]:
    torch.manual_seed(0)
    config = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=256,
                         max_seq_len=32)
    model = Llama(config)
    q = quant.QuantConfig(format=fmt, bits=bits)
    quantized = quant.prepare(model, q)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 256, (4, 32))
    losses = []
    for step in range(steps):
        if step == 2:
            quant.switch_on(quantized, q, seed=0)
        if batched_update:
            quant_batch.update(quantized, kernels=kernels)
        # without it, every module quantizes itself in forward: the per-tensor path
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("fmt,bits", [("kmeans", 1), ("kmeans", 2), ("kmeans", 4), ("uniform", 1),
                                      ("uniform", 3)])
def test_training_losses_identical(fmt: str, bits: int) -> None:
    assert train_losses(fmt, bits, batched_update=True) == train_losses(fmt, bits, batched_update=False)


def test_refitted_codebook_is_used() -> None:
    """The per-block codebook tables are cached; a re-fit (or a load) bumps the centroids' version."""
    config = quant.QuantConfig(format="kmeans", bits=3)
    modules = make_modules(config)
    quant_batch.update(modules)
    quant.refresh(modules, config, seed=11)
    quant_batch.update(modules)
    for _, m in modules:
        expected = m.weight + (quant.fake_quantize(m.weight, m.kind, m.bits, m.block_size, m.scale_mode,
                                                   m.centroids) - m.weight)
        assert torch.equal(m.ste_weight(), expected)


def test_quant_batch_builds_on_quant_and_not_the_other_way() -> None:
    """No import cycle: sweep/quant.py imports nothing of quant_batch, not even inside a function."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(quant.__file__).read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert imports  # the walk saw the module's imports
    names = {alias.name for node in imports for alias in node.names} | \
        {node.module for node in imports if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in names if "quant_batch" in name}
    assert "sweep.quant" in {node.module for node in ast.parse(Path(quant_batch.__file__).read_text()).body
                             if isinstance(node, ast.ImportFrom)}
