"""Weights & Biases logging: offline by default, ``disabled`` in tests, never an API key written by us.

The run dir's own files are the source of truth (``fit/`` reads those); W&B is a viewer. The W&B run id is
the bitlaw run_id and ``resume="allow"``, so a requeued job continues the same online run. Offline runs
cannot resume in W&B 0.31: a requeued job writes a second ``offline-run-*`` segment with the same id,
which readers merge by run id and ``_step``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODES = ("offline", "online", "disabled")


@dataclass
class WandbConfig:
    mode: str = "offline"
    project: str = "bitlaw"
    entity: str | None = None
    tags: tuple[str, ...] = ()


class WandbLogger:
    def __init__(self, config: WandbConfig, run_dir: Path, run_id: str, group: str, resolved_config: dict):
        self.run = None
        if config.mode == "disabled":
            return  # do not even import wandb: it costs ~1 s and starts a service process
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.run = wandb.init(
            mode=config.mode,
            project=config.project,
            entity=config.entity,
            dir=str(run_dir),  # offline files land in <run dir>/wandb/
            id=run_id,
            resume="allow",
            group=group,
            tags=list(config.tags),
            config=resolved_config,
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if v is not None and k != "step"}, step=step)

    def finish(self, summary: dict[str, Any], exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in summary.items() if v is not None})
            self.run.finish(exit_code=exit_code)
            self.run = None
