"""The per-size training recipe, and the config resolvers the conf/ tree uses. Torch-free.

Learning rate by width (μP-style, lr ∝ 1/d_model): `width_lr(d_model) = 0.128 / d_model`, i.e. 2e-3 at
d_model 64 and 1e-3 at 128. Evidence (`experiment=lr_sweep`, bf16, WSD, batch 1024, 500k tokens; `bitlaw
best-lr sweeps/lr_sweep`, docs/method.md §5): the optimum is interior at every rung, at 2.2e-3 (N_quant 49k,
d 64), 1.8e-3 (111k, d 64), 0.96e-3 (295k, d 128) and 1.5e-3 (786k, d 128), vertices of a parabola in log lr
through the best grid point and its neighbours; the rule is within 1.5x of each. An experiment uses it with
`train.lr: ${width_lr:${model.d_model}}`.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from sweep import contract

LR_TIMES_WIDTH = 0.128  # lr × d_model at the optimum of the CPU ladder's lr sweep


def width_lr(d_model: int, lr_times_width: float = LR_TIMES_WIDTH) -> float:
    """The learning rate of a model of width `d_model`: lr_times_width / d_model."""
    return float(lr_times_width) / int(d_model)


def ladder_key(key: str, d_model: int) -> int:
    """One key of the CPU ladder's model at width ``d_model`` (conf/model/ladder.yaml:
    ``${ladder:ffn_dim,${model.d_model}}``); the rule is sweep.contract.family's."""
    try:
        return contract.ladder_shape(int(d_model))[key]
    except (TypeError, ValueError) as err:
        raise ValueError(str(err)) from None


def cpu_count() -> int:
    """The cores this process may use (its affinity mask; os.cpu_count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def register_resolvers() -> None:
    """Register the resolvers conf/ uses; called before composing (the app, `bitlaw plan`), and reaching
    submitit jobs through Hydra's pickled singleton state."""
    OmegaConf.register_new_resolver("cpu_count", cpu_count, replace=True)
    # hydra.job.config.override_dirname.exclude_keys: the contract's volatile keys among a job's overrides
    OmegaConf.register_new_resolver("bitlaw_volatile_overrides", contract.volatile_overrides, replace=True)
    OmegaConf.register_new_resolver("width_lr", width_lr, replace=True)
    OmegaConf.register_new_resolver("ladder", ladder_key, replace=True)
