"""The CPU ladder (sweep/contract/family.py): one rule makes the demo's grid sizes and every contender."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fit.answer.shapes import llama3_ffn_dim, resolve_arch
from sweep.app import CONF_DIR
from sweep.contract import ladder_shape, ladder_widths, param_counts
from sweep.grid import expand

SHAPE_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")


def grid_models(experiment: str) -> tuple[list[dict], set[int]]:
    """The distinct resolved model shapes of an experiment's grid, and its quantization block sizes."""
    jobs = expand([f"experiment={experiment}"])
    models = {tuple(OmegaConf.to_container(job.model, resolve=True).items()) for job in jobs}
    return [dict(m) for m in models], {int(job.quant.block_size) for job in jobs}


def test_the_rule_gives_heads_of_16_dims_gqa_2_to_1_and_llama3s_ffn_width() -> None:
    for d in ladder_widths(512):
        shape = ladder_shape(d)
        assert shape["n_heads"] * 16 == d and shape["n_heads"] == 2 * shape["n_kv_heads"]
        assert shape["ffn_dim"] == llama3_ffn_dim(d, multiplier=1.0, multiple_of=32)
        assert shape["ffn_dim"] % 32 == 0 and shape["n_layers"] == 2 and shape["vocab_size"] == 256
    assert [ladder_shape(d)["ffn_dim"] for d in (32, 64, 96, 128, 160, 192)] == [96, 192, 256, 352, 448, 512]


@pytest.mark.parametrize("bad", [0, 48, 100, -32, 64.0, True])
def test_a_width_off_the_ladder_is_one_clear_error(bad) -> None:
    with pytest.raises(ValueError, match="model.d_model must be a positive multiple of 32"):
        ladder_shape(bad)


@pytest.mark.parametrize("d_model", [32, 96, 160])
def test_conf_model_ladder_composes_to_the_rule(d_model: int) -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["model=ladder", f"model.d_model={d_model}"])
    assert OmegaConf.to_container(cfg, resolve=True)["model"] == ladder_shape(d_model)


def test_the_demo_grid_is_four_ladder_sizes_spanning_over_10x() -> None:
    shapes, blocks = grid_models("demo")
    assert all(s == ladder_shape(s["d_model"]) for s in shapes)  # no hand-listed shape
    sizes = sorted(param_counts(*(s[k] for k in SHAPE_KEYS))["N_quant"] for s in shapes)
    assert len(sizes) >= 4 and sizes[-1] / sizes[0] >= 10
    assert blocks == {32}


def test_arch_ladder_is_the_same_rule_and_verify_plans_default() -> None:
    shapes = {s.name: s for s in resolve_arch("ladder")}
    for d in (32, 64, 128, 1024):
        assert {k: getattr(shapes[f"w{d}"], k) for k in ladder_shape(d)} == ladder_shape(d)
    from bitlaw.commands.verify import DEFAULT_ARCH

    assert DEFAULT_ARCH == "ladder"


def test_the_tour_uses_the_same_rule() -> None:
    shapes, blocks = grid_models("tour")
    assert len(shapes) == 3 and all(s == ladder_shape(s["d_model"]) for s in shapes) and blocks == {32}
