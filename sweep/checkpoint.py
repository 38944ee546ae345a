"""Resumable checkpoints: model (with quantizer buffers), optimizer, RNG states, data position, step.

The data sampler is a pure function of (seed, step), so the step is the data position. Saves are atomic
(temp file + fsync + rename) and keep a single ``checkpoint/state.pt``: a kill mid-save leaves the
previous one. The file is written as it is serialised, never held whole in memory.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweep.config import ConfigError
from sweep.contract import atomic_path

STATE_FILE = "state.pt"
PAYLOAD_KEYS = frozenset({"run_id", "step", "model", "optimizer", "rng", "progress"})  # what save() writes


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
        for index in cuda_rng_devices(len(state["cuda"]), torch.cuda.device_count()):
            torch.cuda.set_rng_state(state["cuda"][index], index)


def cuda_rng_devices(saved: int, visible: int) -> range:
    """The GPUs whose RNG state a resume restores: those both saved and visible now. A requeued task may
    see fewer GPUs than the one that saved (a site binding one GPU per task), where set_rng_state_all
    raised IndexError; a GPU not saved keeps its seed (training draws no random numbers on the GPU)."""
    return range(min(saved, visible))


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
    # Streamed: torch.save writes the zip archive storage by storage into the temp file (a CUDA tensor is
    # copied to host one storage at a time), so a save costs about one tensor of host memory rather than
    # the whole serialised state twice over (BytesIO + getvalue: ~28 GB at l1b).
    with atomic_path(Path(directory) / STATE_FILE) as tmp:
        torch.save(payload, tmp)


def exists(directory: Path) -> bool:
    return (Path(directory) / STATE_FILE).exists()


class CorruptCheckpoint(ConfigError):
    """A checkpoint that cannot be read back: moved aside, so that running again starts the run afresh."""


def load(directory: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The saved state, or CorruptCheckpoint (one line) after moving an unreadable file aside: left in place
    it would fail every re-run the same way (saves are atomic, so this is a damaged disk or a bad copy)."""
    path = Path(directory) / STATE_FILE
    try:
        # weights_only=False: the payload holds numpy/python RNG states, and we wrote it ourselves
        payload = torch.load(path, map_location=map_location, weights_only=False)
        if not isinstance(payload, dict) or not PAYLOAD_KEYS <= set(payload):
            raise ValueError("not a bitlaw checkpoint (keys missing)")
    except Exception as err:  # UnpicklingError, RuntimeError (zip reader), EOFError, ValueError, ...
        aside = path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
        with contextlib.suppress(OSError):  # another rank of the same job may have moved it already
            os.replace(path, aside)
        detail = str(err).splitlines()[0] if str(err) else ""
        raise CorruptCheckpoint(f"checkpoint {path} is corrupt ({type(err).__name__}: {detail}); moved it "
                                f"to {aside.name}: run the same command again to start this run afresh"
                                ) from None
    return payload


def restore(payload: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    set_rng_state(payload["rng"])
