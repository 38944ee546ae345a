"""Shared fixtures. The Slurm part: a session fixture for the local cluster, and CI's no-skip rule."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
