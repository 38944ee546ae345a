"""Tokens trained with WSD cooldown branches (sweep/branches.py) against one run per token budget.

    .venv/bin/python benchmarks/branch_tokens.py [experiment ...]   (default: demo cluster)

For each experiment, the jobs that differ only in `train.tokens` become one trunk (the largest budget) with
a branch per smaller budget; each branch costs only its decay (decay_fraction of its steps). Figures, no
assertions.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sweep.app  # noqa: E402,F401  (registers the config resolvers)
from sweep.branches import decay_start  # noqa: E402


def tokens(experiment: str) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    budgets = sorted(float(v) for v in str(params.pop("train.tokens")).split(","))
    trunks = math.prod(len(str(v).split(",")) for v in params.values())
    batch, fraction = cfg.train.batch_tokens, cfg.train.decay_fraction
    steps = [math.ceil(d / batch) for d in budgets]
    separate = batch * sum(steps)
    branched = batch * (steps[-1] + sum(s - decay_start(s, fraction) for s in steps[:-1]))
    return {"trunks": trunks, "budgets": len(budgets), "separate": trunks * separate,
            "branched": trunks * branched, "saving": 1 - branched / separate}


def main(argv: list[str]) -> None:
    for experiment in argv or ["demo", "cluster"]:
        t = tokens(experiment)
        print(f"experiment={experiment}: {t['trunks']} trunks x {t['budgets']} token budgets; "
              f"separate runs {t['separate']:.4g} tokens, branches {t['branched']:.4g} tokens "
              f"({100 * t['saving']:.1f} % fewer)")


if __name__ == "__main__":
    main(sys.argv[1:])
