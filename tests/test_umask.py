"""Every atomically written file (run.json, summary.json, config.*, export.pt, runs.csv, fit.json) gets the
mode a plain open() gives, 0666 less the umask: tempfile.mkstemp's 0600 kept teammates on a shared cluster
from gathering each other's sweeps."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweep import contract


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_each_atomic_writer_gives_open_s_mode(umask: int, tmp_path: Path) -> None:
    with open(tmp_path / "plain.txt", "w"):
        pass
    expected = 0o666 & ~umask
    assert mode_of(tmp_path / "plain.txt") == expected
    contract.atomic_write_json(tmp_path / "run.json", {"a": 1})
    contract.atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    contract.atomic_write_bytes(tmp_path / "export.pt", b"\0")
    with contract.atomic_path(tmp_path / "runs.csv") as tmp:
        tmp.write_text("N,D\n")  # the writers that want a name (pandas, torch.save, matplotlib)
    for name in ("run.json", "config.yaml", "export.pt", "runs.csv"):
        assert mode_of(tmp_path / name) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "export.pt", "plain.txt", "run.json",
                                                           "runs.csv"]  # fmt: skip  (no temp file left)


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), contract.atomic_path(tmp_path / "fit.json") as tmp:
        tmp.write_text("{")
        raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []
