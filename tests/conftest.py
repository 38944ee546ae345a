"""Shared helpers and fixtures: the repository root, a composed job config, and the Slurm part (a session
fixture for the local cluster, and CI's no-skip rule). Test modules import the helpers with
`from conftest import ROOT, compose_config` (tests/ is on sys.path: pytest's default import mode)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the checkout: cwd and PYTHONPATH of subprocess tests
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def compose_config(*overrides: str) -> dict[str, Any]:
    """conf/config.yaml composed with the overrides and resolved to plain containers: the dict a job gets."""
    # imported here, not above: most tests (fit/, the CLI) need neither Hydra nor sweep/
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sweep.app import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def _slurm_ping() -> str | None:
    """None when the local controller answers, else why not."""
    if shutil.which("scontrol") is None:
        return "Slurm is not installed (no scontrol on PATH)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "scontrol ping timed out"
    said = (ping.stdout + ping.stderr).strip().splitlines()
    return None if " is UP" in ping.stdout else (said[0] if said else "scontrol ping failed")


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The local cluster's default partition; skips (fails in CI) when the cluster is not up.

    `make test` starts it with scripts/slurm-up.sh before pytest; locally run that script once
    (as root) to include the Slurm tests.
    """
    problem = _slurm_ping()
    if problem is not None:
        pytest.skip(f"Slurm cluster not running ({problem}); start it with `sudo scripts/slurm-up.sh`")
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True)
    return out.stdout.split()[0].rstrip("*")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI a skipped Slurm test is a failure: CI must exercise the real cluster, never silently not."""
    outcome = yield
    report = outcome.get_result()
    if _IN_CI and report.skipped and item.get_closest_marker("slurm") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"Slurm test skipped in CI (CI=true), which counts as a failure: {reason}"
