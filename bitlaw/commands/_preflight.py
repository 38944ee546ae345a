"""`bitlaw plan`'s GPU preflight: each job of an experiment grid against one GPU's memory and the Slurm time
it would be given (the model is sweep/budget.py, which the Slurm submission check uses too)."""

from __future__ import annotations

import math
from typing import Any

from fit.errors import InputError


def preflight(items: list[str], gpu_memory: str, mfu: float | None, peak_flops: float) -> dict[str, Any]:
    """Each job's peak GPU memory and hours against its GPU and Slurm time (sweep/budget.py): {"jobs": [...],
    "preflight": the settings and the refusal a Slurm submission would print}; {} for a table."""
    if not items[0].startswith("experiment="):
        return {}
    import itertools

    import yaml
    from omegaconf import OmegaConf

    from fit.units import parse_memory
    from sweep import budget, contract, grid

    memory = parse_memory(gpu_memory)
    if len(memory) != 1:
        raise InputError(f"--gpu-memory: {gpu_memory!r} is a list; give one GPU's memory (e.g. 80GB)")
    mfu = mfu if mfu is not None else budget.DEFAULT_MFU
    with grid.composing():  # the grid was composed without Hydra's node: read the launcher here
        g = grid.sweep_grid(grid.parse(items))
        launcher = OmegaConf.to_container(g.base.hydra.launcher, resolve=False)
        if "timeout_min" not in launcher:  # the local launcher: check against what Slurm would be given
            launcher = yaml.safe_load((contract.conf_dir() / "hydra" / "launcher" / "slurm.yaml").read_text())
        names = [" ".join(o.input_line for key, o in zip(g.axes, combo, strict=True) if len(g.axes[key]) > 1)
                 for combo in itertools.product(*g.axes.values())]
        jobs = [OmegaConf.to_container(cfg, resolve=True) for cfg in g.jobs()]
    budgets = [budget.job_budget(name or "the job", job, budget.resources(budget.job_launcher(launcher, job)),
                                 memory[0], mfu, peak_flops) for name, job in zip(names, jobs, strict=True)]
    return {"jobs": [b.as_json() for b in budgets],
            "preflight": {"gpu_memory_bytes": int(memory[0]), "mfu": mfu, "peak_flops": peak_flops,
                          "refusal": budget.refusal(budgets)}}


def preflight_lines(pre: dict[str, Any]) -> list[str]:
    if not pre:
        return []
    jobs, p = pre["jobs"], pre["preflight"]
    top = max(jobs, key=lambda j: j["peak_memory_bytes"])
    longest = max(jobs, key=lambda j: j["wall_s"] / (j["time_limit_s"] or math.inf))
    limit = "no time limit" if longest["time_limit_s"] is None else f"{longest['time_limit_s'] / 3600:.3g} h"
    lines = [f"preflight at {100 * p['mfu']:.3g} % MFU of {p['peak_flops']:g} FLOP/s per GPU: {len(jobs)} "
             f"jobs; largest peak {top['peak_memory_bytes'] / 1e9:.1f} GB of "
             f"{p['gpu_memory_bytes'] / 1e9:.0f} ({top['name']}); tightest time "
             f"{longest['wall_s'] / 3600:.3g} h of {limit} ({longest['name']})"]
    for j in jobs:
        if not (j["fits"] and j["finishes"]):
            lines.append(f"  CANNOT {'fit' if not j['fits'] else 'finish'}: {j['name']}: "
                         f"{j['peak_memory_bytes'] / 1e9:.1f} GB, {j['wall_s'] / 3600:.3g} h; set "
                         f"{'; '.join(j['fixes'])}")
    lines.append(f"  a Slurm submission would be refused: {p['refusal']}" if p["refusal"] else
                 "  every job fits and finishes")
    return lines
