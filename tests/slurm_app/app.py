"""The stand-in task (`python -m tests.slurm_app [overrides]`): see the package docstring.

The task function lives in this importable module, as sweep.app's does, so it is pickled by reference.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sweep.contract import compute_run_id


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def task(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_id = compute_run_id(OmegaConf.to_container(cfg, resolve=True))  # as the real job does
    _write(run_dir / "run.json", {"run_id": run_id, "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                                  "value": cfg.value, "started": time.time()})
    if cfg.mode == "raise" or (cfg.fail_marker and Path(cfg.fail_marker, f"fail-{cfg.value}").exists()):
        raise RuntimeError(f"deliberate failure for value={cfg.value}")
    time.sleep(cfg.sleep_s)
    loss = 1.0 / (1.0 + cfg.value) + cfg.offset
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 1, "val_loss": loss}) + "\n")
    _write(run_dir / "summary.json", {"status": "completed", "final_val_loss": loss, "wall_s": cfg.sleep_s})
    return loss


# An absolute path: a relative one would be looked up as the Python module tests.slurm_app.conf.
main = hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parent / "conf"),
                  config_name="config")(task)
