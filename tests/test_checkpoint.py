"""checkpoint.save streams to disk: a save costs next to no host memory beyond the state itself."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from sweep import checkpoint

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_a_save_does_not_hold_the_serialised_state_in_memory(tmp_path) -> None:
    model = torch.nn.Linear(2048, 4096, bias=False)  # 32 MiB of weights
    optimizer = torch.optim.AdamW(model.parameters())
    model.weight.grad = torch.zeros_like(model.weight)
    optimizer.step()  # + 64 MiB of Adam moments: a 96 MiB state
    before, peak, done = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    checkpoint.save(tmp_path, model=model, optimizer=optimizer, run_id="r", step=3, progress={"evals": []})
    done.set()
    sampler.join()
    # building the file in a BytesIO (the old save) took the whole 96 MiB on top
    assert peak[0] - before < 24 * 2**20
    payload = checkpoint.load(tmp_path)
    assert payload["step"] == 3 and torch.equal(payload["model"]["weight"], model.weight.detach())
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.STATE_FILE]  # no temp file left behind
