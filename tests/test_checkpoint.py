"""checkpoint.save streams to disk: a save costs next to no host memory beyond the state itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sweep import checkpoint

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def high_water_mark_bytes() -> int:
    """The kernel's peak resident set size of this process (VmHWM): every page ever resident counts, so no
    spike between two looks can be missed, unlike sampling the current RSS."""
    line = next(line for line in STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024  # reported in kB


def reset_high_water_mark() -> None:
    CLEAR_REFS.write_text("5")  # Linux >= 4.0: the peak restarts from the current RSS


@pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs Linux /proc (VmHWM and clear_refs)")
def test_a_save_does_not_hold_the_serialised_state_in_memory(tmp_path) -> None:
    model = torch.nn.Linear(2048, 4096, bias=False)  # 32 MiB of weights
    optimizer = torch.optim.AdamW(model.parameters())
    model.weight.grad = torch.zeros_like(model.weight)
    optimizer.step()  # + 64 MiB of Adam moments: a 96 MiB state
    reset_high_water_mark()  # the peak of building the state above does not count
    before = high_water_mark_bytes()
    checkpoint.save(tmp_path, model=model, optimizer=optimizer, run_id="r", step=3, progress={"evals": []})
    peak = high_water_mark_bytes()
    # building the file in a BytesIO (the old save) took the whole 96 MiB on top
    assert peak - before < 24 * 2**20, f"a save raised the peak RSS by {(peak - before) / 2**20:.1f} MiB"
    payload = checkpoint.load(tmp_path)
    assert payload["step"] == 3 and torch.equal(payload["model"]["weight"], model.weight.detach())
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.STATE_FILE]  # no temp file left behind
