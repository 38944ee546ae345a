"""The per-size recipe (sweep/recipe.py): the learning rate by width, as an experiment uses it."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sweep.app import CONF_DIR
from sweep.recipe import width_lr


def test_width_rule_halves_the_lr_when_the_width_doubles() -> None:
    assert width_lr(64) == pytest.approx(2e-3) and width_lr(128) == pytest.approx(1e-3)
    assert width_lr(2048) == pytest.approx(6.25e-5)


@pytest.mark.parametrize("model,lr", [("r49k", 2e-3), ("r295k", 1e-3)])
def test_an_experiment_takes_the_lr_of_each_width(model: str, lr: float) -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=tour", f"model={model}"])
    assert OmegaConf.to_container(cfg, resolve=True)["train"]["lr"] == pytest.approx(lr)
