"""Resumable checkpoints: model (with quantizer buffers), optimizer, RNG states, data position, step.

The data sampler is a pure function of (seed, step), so the step is the data position. Saves are atomic
(temp file + rename) and keep a single ``checkpoint/state.pt``: a kill mid-save leaves the previous one.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweep.contract import atomic_write_bytes

STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run_id: str,
         step: int, progress: dict[str, Any]) -> None:
    """`progress`: everything else the loop needs to continue (eval history, tokens seen, wall time …)."""
    payload = {
        "run_id": run_id,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "progress": progress,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(directory) / STATE_FILE, buffer.getvalue())


def exists(directory: Path) -> bool:
    return (Path(directory) / STATE_FILE).exists()


def load(directory: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # weights_only=False: the payload holds numpy/python RNG states, and we wrote it ourselves
    return torch.load(Path(directory) / STATE_FILE, map_location=map_location, weights_only=False)


def restore(payload: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    set_rng_state(payload["rng"])
