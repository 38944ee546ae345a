"""Tokens trained with WSD cooldown branches (sweep/branches.py) against one run per token budget.

    .venv/bin/python benchmarks/branch_tokens.py [experiment ...]   (default: demo cluster)

Every job of the experiment (sweep/grid.py: the jobs `python -m sweep -m experiment=NAME` launches) is one
trunk, the largest budget, with a branch per smaller budget in `train.branches`; each branch costs only its
decay (decay_fraction of its steps). Figures, no assertions.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweep.branches import plan_branches, separate_tokens, trained_tokens  # noqa: E402
from sweep.grid import expand  # noqa: E402


def tokens(experiment: str) -> dict[str, float]:
    trunks, budgets, separate, branched = 0, set(), 0, 0
    for job in expand([f"experiment={experiment}"]):
        t, q = job.train, job.quant
        plan = plan_branches(t, str(q.format), q.qat_start)
        steps = math.ceil(float(t.tokens) / t.batch_tokens)
        trunks += 1
        budgets.add(len(plan) + 1)
        separate += separate_tokens(steps, t.batch_tokens, plan)
        branched += trained_tokens(steps, t.batch_tokens, plan)
    return {"trunks": trunks, "budgets": "/".join(str(b) for b in sorted(budgets)), "separate": separate,
            "branched": branched, "saving": 1 - branched / separate}


def main(argv: list[str]) -> None:
    for experiment in argv or ["demo", "cluster"]:
        t = tokens(experiment)
        print(f"experiment={experiment}: {t['trunks']} trunks x {t['budgets']} token budgets; "
              f"separate runs {t['separate']:.4g} tokens, branches {t['branched']:.4g} tokens "
              f"({100 * t['saving']:.1f} % fewer)")


if __name__ == "__main__":
    main(sys.argv[1:])
