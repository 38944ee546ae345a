"""Bit accounting, parameter counts against real torch models, the memory model and the shape families."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fit.answer.memory import BitAccounting, Shape, conf_model_dir, exact_bytes, shape_bytes
from fit.answer.shapes import bitlaw_shapes, continuous_shapes, llama3_ffn_dim, llama3_shapes, resolve_arch
from fit.errors import InputError
from sweep import model as model_module


def test_p_w_counts_block_scales() -> None:
    acct = BitAccounting()
    assert [acct.p_w(n, "kmeans") for n in (1, 2, 3, 4)] == [1.25, 2.25, 3.25, 4.25]
    assert acct.p_w(16, "kmeans") == acct.p_w(4, "none") == 16.0
    assert acct.p_w(2, "ternary") == 2.25
    assert BitAccounting(block_size=128, scale_bits=32).p_w(2, "uniform") == 2.25
    assert BitAccounting(block_size=32, scale_bits=8).p_w(3, "uniform") == 3.25
    with pytest.raises(InputError, match="--format.*allowed: none, kmeans"):
        acct.p_w(2, "nf4")


def test_llama3_ffn_rule_matches_published_widths() -> None:
    # Llama-3 8B / 70B (reference configs: ffn_dim_multiplier 1.3, multiple_of 1024 / 4096).
    assert llama3_ffn_dim(4096) == 14336
    assert llama3_ffn_dim(8192, multiple_of=4096) == 28672
    # The 1-Bit Wonder flavours (1-Bit Wonder's memory-budget table).
    assert {s.name: s.ffn_dim for s in llama3_shapes()} == {
        "500M": 6144, "1B": 7168, "4B": 11264, "12B": 14336, "31B": 21504,
    }  # fmt: skip


def test_one_bit_wonder_memory_matched_configs() -> None:
    """1-Bit Wonder: 4B bf16, 12B at 4.25 bits and 31B at 1.25 bits all need ≈ 7.7–7.8 GB of weights."""
    shapes = {s.name: s for s in llama3_shapes()}
    assert shapes["4B"].n_quant == 3_095_396_352
    assert shapes["4B"].n_embed == 788_004_864
    assert shape_bytes(shapes["4B"], 16) / 1e9 == pytest.approx(7.77, abs=0.005)
    assert shape_bytes(shapes["12B"], 4.25) / 1e9 == pytest.approx(7.66, abs=0.005)
    assert shape_bytes(shapes["31B"], 1.25) / 1e9 == pytest.approx(7.70, abs=0.005)


@pytest.mark.parametrize("name", ["500M", "1B", "4B", "12B", "31B"])
def test_counts_equal_a_torch_model_of_the_same_shape(name: str) -> None:
    shape = next(s for s in llama3_shapes() if s.name == name)
    config = model_module.ModelConfig(**{k: getattr(shape, k) for k in (
        "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")})  # fmt: skip
    with torch.device("meta"):
        model = model_module.Llama(config)
    counts = {"quant": 0, "embed": 0, "norm": 0}
    linear_shapes = []
    for module_name, param in model.named_parameters():
        parts = module_name.split(".")
        if parts[0] in ("tok_embeddings", "output"):
            counts["embed"] += param.numel()
        elif parts[-2].endswith("norm") or parts[0] == "norm":
            counts["norm"] += param.numel()
        else:
            assert parts[-2] in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"), module_name
            counts["quant"] += param.numel()
            linear_shapes.append(tuple(param.shape))
    assert counts == {"quant": shape.n_quant, "embed": shape.n_embed, "norm": shape.n_norm}
    assert sum(p.numel() for p in model.parameters()) == shape.n_total
    assert linear_shapes == shape.linear_shapes()
    assert model_module.param_counts(config) == {
        "N_total": shape.n_total, "N_nonembed": shape.n_nonembed,
        "N_quant": shape.n_quant, "N_hp": shape.n_hp,
    }  # fmt: skip


def test_exact_bytes_adds_partial_blocks_and_centroid_tables() -> None:
    tiny = Shape("tiny", d_model=96, n_layers=2, n_heads=3, n_kv_heads=1, ffn_dim=160, vocab_size=256)
    acct = BitAccounting()
    # Every linear: index bits + ceil(in/64) bf16 scales per output row (+ 2^n bf16 centroids for k-means).
    by_hand = 0
    for out_f, in_f in tiny.linear_shapes():
        by_hand += out_f * in_f * 3 + out_f * math.ceil(in_f / 64) * 16
    uniform = exact_bytes(tiny, 3, "uniform", acct)
    assert uniform == math.ceil(by_hand / 8) + 2 * tiny.n_hp
    kmeans = exact_bytes(tiny, 3, "kmeans", acct)
    assert kmeans - uniform == 14 * 8 * 2  # 14 linears × 2^3 centroids × 2 bytes
    assert exact_bytes(tiny, 16, "kmeans") == 2 * tiny.n_total


def test_exact_bytes_is_the_model_figure_when_blocks_divide() -> None:
    shape = next(s for s in llama3_shapes() if s.name == "1B")
    model = shape_bytes(shape, 2.25)
    exact = exact_bytes(shape, 2, "kmeans")
    centroids = 7 * shape.n_layers * 4 * 2
    assert exact - centroids == pytest.approx(model, abs=1)


def test_shape_validation_names_the_field() -> None:
    with pytest.raises(InputError, match="n_heads"):
        Shape("bad", d_model=100, n_layers=2, n_heads=3, n_kv_heads=1, ffn_dim=64, vocab_size=10)
    with pytest.raises(InputError, match="ffn_dim must be a positive integer"):
        Shape("bad", d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=0, vocab_size=10)


def test_user_shape_files_yaml_and_json(tmp_path) -> None:
    spec = {"small": dict(d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=384, vocab_size=1000)}
    (tmp_path / "shapes.json").write_text(json.dumps(spec))
    (tmp_path / "shapes.yaml").write_text(
        "- {name: a, d_model: 64, n_layers: 1, n_heads: 2, n_kv_heads: 1, ffn_dim: 128, vocab_size: 256}\n"
    )
    assert [s.name for s in resolve_arch(str(tmp_path / "shapes.json"))] == ["small"]
    assert resolve_arch(str(tmp_path / "shapes.yaml"))[0].d_model == 64
    (tmp_path / "bad.yaml").write_text("small: {d_model: 64}\n")
    with pytest.raises(InputError, match="lacks n_layers"):
        resolve_arch(str(tmp_path / "bad.yaml"))
    with pytest.raises(InputError, match="does not exist"):
        resolve_arch(str(tmp_path / "missing.yaml"))


def test_unknown_arch_lists_the_allowed_ones() -> None:
    with pytest.raises(InputError,
                       match="--arch: unknown architecture 'gpt2'; allowed: llama3, ladder, bitlaw"):
        resolve_arch("gpt2")
    with pytest.raises(InputError, match="NAME:continuous"):
        resolve_arch("llama3:dense")


def test_bitlaw_family_reads_conf_model(tmp_path) -> None:
    (tmp_path / "tiny.yaml").write_text(
        "d_model: 64\nn_layers: 2\nn_heads: 4\nn_kv_heads: 2\nffn_dim: 192\nvocab_size: 256\n"
    )
    (tmp_path / "notes.yaml").write_text("comment: not a model\n")
    shapes = bitlaw_shapes(tmp_path)
    assert [s.name for s in shapes] == ["tiny"]
    assert shapes[0].n_quant == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 192)


def test_project_ladder_reads_the_shipped_conf_model() -> None:
    # A missing conf/model is a packaging bug (an installed wheel without conf/), not a reason to skip.
    assert any(conf_model_dir().glob("*.yaml")), f"no model configs in {conf_model_dir()}"
    shapes = resolve_arch("bitlaw")
    assert shapes and all(s.n_quant > 0 for s in shapes)


def test_continuous_family_passes_through_anchors_and_is_buildable() -> None:
    anchors = llama3_shapes()
    ladder = continuous_shapes(anchors)
    keys = {(s.d_model, s.n_layers, s.ffn_dim) for s in ladder}
    assert all((a.d_model, a.n_layers, a.ffn_dim) in keys for a in anchors)
    assert len(ladder) > 4 * len(anchors)
    totals = [s.n_total for s in ladder]
    assert totals == sorted(totals)
    assert totals[0] < anchors[0].n_total and totals[-1] > anchors[-1].n_total
    for s in ladder:  # every rung divides into heads, GQA groups and 64-wide quantization blocks
        assert s.d_model % s.n_heads == 0 and s.n_heads % s.n_kv_heads == 0
        assert s.d_model % 64 == 0 and s.ffn_dim % 64 == 0
    # Between two anchors the ladder has rungs strictly in between.
    between = [s for s in ladder if anchors[2].n_total < s.n_total < anchors[3].n_total]
    assert len(between) >= 3
