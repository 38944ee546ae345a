"""The Llama model: exact parameter counts by role, meta-device construction, causality."""

from __future__ import annotations

import pytest
import torch

from sweep.model import Llama, ModelConfig, param_counts
from sweep.quant import QuantConfig, is_block_linear, prepare

SHAPES = [
    ModelConfig(d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=64),
    ModelConfig(d_model=128, n_layers=3, n_heads=8, n_kv_heads=8, ffn_dim=320, vocab_size=300),
    ModelConfig(d_model=192, n_layers=2, n_heads=6, n_kv_heads=1, ffn_dim=512, vocab_size=1000),
]


def counts_from_module(model: torch.nn.Module) -> dict[str, int]:
    quantized = hp = embed_and_head = 0
    for name, param in model.named_parameters():
        module_name = name.rsplit(".", 1)[0]
        if is_block_linear(module_name):
            quantized += param.numel()
        else:
            hp += param.numel()
        if module_name in ("tok_embeddings", "output"):
            embed_and_head += param.numel()
    total = quantized + hp
    return {"N_total": total, "N_nonembed": total - embed_and_head, "N_quant": quantized, "N_hp": hp}


@pytest.mark.parametrize("config", SHAPES)
def test_param_counts_match_the_module(config: ModelConfig) -> None:
    model = Llama(config)
    assert param_counts(config) == counts_from_module(model)
    assert param_counts(config)["N_total"] == sum(p.numel() for p in model.parameters())


def test_module_names_and_shapes_are_the_contract() -> None:
    config = SHAPES[2]
    shapes = {name: tuple(p.shape) for name, p in Llama(config).named_parameters()}
    d, kv, f, v = config.d_model, config.n_kv_heads * config.head_dim, config.ffn_dim, config.vocab_size
    assert shapes["tok_embeddings.weight"] == (v, d)
    assert shapes["output.weight"] == (v, d)
    assert shapes["norm.weight"] == (d,)
    assert shapes["layers.1.attention.wq.weight"] == (d, d)
    assert shapes["layers.1.attention.wk.weight"] == (kv, d)
    assert shapes["layers.1.attention.wv.weight"] == (kv, d)
    assert shapes["layers.1.attention.wo.weight"] == (d, d)
    assert shapes["layers.1.feed_forward.w1.weight"] == (f, d)
    assert shapes["layers.1.feed_forward.w3.weight"] == (f, d)
    assert shapes["layers.1.feed_forward.w2.weight"] == (d, f)
    assert shapes["layers.0.attention_norm.weight"] == (d,)
    assert shapes["layers.0.ffn_norm.weight"] == (d,)
    assert not any(name.endswith("bias") for name in shapes)


def test_llama3_1b_builds_on_meta_without_allocating() -> None:
    # 1-Bit Wonder's Llama-3 1B flavour: vocab 128256, 2048/16L/16h/8kv, ffn 8192
    config = ModelConfig(d_model=2048, n_layers=16, n_heads=16, n_kv_heads=8, ffn_dim=8192, vocab_size=128256)
    with torch.device("meta"):
        model = Llama(config)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert param_counts(config) == counts_from_module(model)
    assert param_counts(config)["N_total"] > 1.2e9


def test_quantized_model_keeps_parameter_names_and_counts() -> None:
    config = SHAPES[0]
    plain = {n: p.shape for n, p in Llama(config).named_parameters()}
    model = Llama(config)
    prepare(model, QuantConfig(format="kmeans", bits=2))
    assert {n: p.shape for n, p in model.named_parameters()} == plain
    assert param_counts(config) == counts_from_module(model)


def test_outputs_are_causal() -> None:
    torch.manual_seed(0)
    model = Llama(SHAPES[0]).eval()
    tokens = torch.randint(0, 256, (2, 16))
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 256
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert a.shape == (2, 16, 256)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])
