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


def api_key_source() -> str | None:
    """Where an online W&B run would find its credentials, as wandb 0.31 looks (WANDB_API_KEY or
    WANDB_IDENTITY_TOKEN_FILE, the .netrc entry for WANDB_BASE_URL's host, an api_key in W&B's settings
    file), or None: then `wandb.init(mode="online")` fails in every job. Read without importing wandb."""
    import configparser
    import netrc
    from urllib.parse import urlsplit

    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(var):
            return var
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    netrc_path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entry = netrc.netrc(str(netrc_path)).authenticators(host) if netrc_path.is_file() else None
    except (netrc.NetrcParseError, OSError):
        entry = None
    if entry and entry[2]:
        return str(netrc_path)
    settings = Path(os.environ.get("WANDB_CONFIG_DIR") or "~/.config/wandb").expanduser() / "settings"
    parser = configparser.ConfigParser()
    try:
        parser.read(settings)
    except configparser.Error:
        return None
    return str(settings) if parser.get("default", "api_key", fallback="") else None


MISSING_KEY = ("logger.wandb.mode=online needs a W&B API key and none is set (no WANDB_API_KEY, no entry for "
               "the W&B host in ~/.netrc); run `wandb login` or export WANDB_API_KEY, or use "
               "logger.wandb.mode=offline (sync later with `wandb sync`) or disabled")


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
