"""A sweep's grid: the jobs ``python -m sweep -m OVERRIDES`` would launch, composed without launching them.

Hydra's BasicSweeper takes the experiment's ``hydra.sweeper.params``, then the command line's overrides (a
later key replacing an earlier one), and launches their Cartesian product, each job composed from conf/.
`bitlaw plan` (the cost and identifiability of a grid), the tests of the named grids and
benchmarks/branch_tokens.py all need that product; this is the one place that builds it. Torch-free.

    with composing():
        grid = sweep_grid(parse(["experiment=demo"]))
        configs = list(grid.jobs())
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from sweep.contract import conf_dir
from sweep.recipe import register_resolvers

CONFIG_NAME = "config"


@contextmanager
def composing() -> Iterator[None]:
    """Hydra's compose API pointed at conf/, with the resolvers conf/ uses (hydra.job's exclude_keys,
    width_lr, cpu_count) registered; `sweep_grid` and `Grid.jobs` run inside it."""
    register_resolvers()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        yield


def parse(overrides: Sequence[str]) -> list[Override]:
    """Hydra's parse of command-line overrides; raises Hydra's OverrideParseException on a bad one."""
    return OverridesParser.create().parse_overrides(list(overrides))


def is_value_key(key: str) -> bool:
    """A plain dotted key (train.tokens), as opposed to a config group selection (model, point) or a +/~ edit:
    Hydra applies such an override by setting the key on the composed config, so we may do the same."""
    return not key.startswith(("+", "~")) and not (conf_dir() / key.split("@")[0]).is_dir()


@dataclass(frozen=True)
class Grid:
    """The experiment composed with the fixed overrides (``base``, Hydra's config included) and the swept
    axes, in BasicSweeper's order: key -> one single-value override per value."""

    base: DictConfig
    axes: dict[str, list[Override]]

    def values(self, key: str) -> list[Any]:
        """The values an axis takes (Hydra's parse: 1e6 is a float, 1000000 an int)."""
        return [override.value() for override in self.axes[key]]

    def __len__(self) -> int:
        return math.prod(len(values) for values in self.axes.values())

    def jobs(self) -> Iterator[DictConfig]:
        """Every job of the product, in launch order, composing once per combination of the group axes (a
        compose costs ~0.2 s: Hydra re-reads the defaults tree) and setting the plain keys on a copy, which
        is what Hydra does too."""
        group_keys = [key for key in self.axes if not is_value_key(key)]
        composed: dict[tuple[str, ...], DictConfig] = {}
        for job in itertools.product(*self.axes.values()):
            chosen = dict(zip(self.axes, job, strict=True))
            groups = tuple(chosen[key].input_line for key in group_keys)
            if groups not in composed:
                composed[groups] = compose(CONFIG_NAME, overrides=list(groups))
            cfg = composed[groups].copy()
            for key in self.axes:
                if key not in group_keys:
                    OmegaConf.update(cfg, key, chosen[key].value(), merge=True)
            yield cfg


def sweep_grid(overrides: list[Override]) -> Grid:
    """The grid of these parsed overrides (inside `composing`); raises Hydra's or OmegaConf's error when the
    experiment cannot be composed."""
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    base = compose(CONFIG_NAME, overrides=fixed, return_hydra_config=True)
    params = dict(OmegaConf.to_container(base.hydra.sweeper.params) or {})
    lines = [f"{key}={value}" for key, value in params.items()] + [o.input_line for o in overrides]
    axes: dict[str, list[Override]] = {}
    for override in parse(lines):
        key = override.get_key_element()
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        axes[key] = [OverridesParser.create().parse_override(f"{key}={value}") for value in values]
    return Grid(base, axes)


def experiments() -> list[str]:
    """The named experiments (conf/experiment/*.yaml), for messages."""
    return sorted(path.stem for path in (conf_dir() / "experiment").glob("*.yaml"))


def expand(overrides: Sequence[str]) -> list[DictConfig]:
    """Every job ``python -m sweep -m OVERRIDES`` would launch, composed (unresolved)."""
    with composing():
        return list(sweep_grid(parse(overrides)).jobs())
