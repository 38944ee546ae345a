"""bitlaw's local launcher through Hydra's own launcher test suites (hydra.test_utils.launcher_common_tests),
as hydra-submitit-launcher's tests run them: the plugin composes, runs and hands back each job as Hydra
expects of any launcher. The Slurm launcher runs the same launch code on a cluster (tests/test_slurm.py)."""

from __future__ import annotations

import pytest
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

# two workers: a batch of two runs side by side. hydra.job.chdir=True: the suites check each job's log in its
# working dir, as under the unspecified version base they were written for; Hydra's version base is
# process-global and `import sweep.app` (hydra.main(version_base="1.3")) sets it, after which jobs no longer
# chdir: the suites passed alone and failed after tests/test_app.py
LOCAL = ["hydra.launcher.parallel=2", "hydra.job.chdir=True"]


@pytest.mark.slow  # each sweep starts workers that import torch (~6 s each on 2 cores)
@pytest.mark.parametrize("launcher_name, overrides", [("bitlaw_local", LOCAL)])
class TestBitlawLocalLauncher(LauncherTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [
    ({"defaults": [{"override hydra/launcher": "bitlaw_local"}, "_self_"]}, ["-m", *LOCAL]),
])
class TestBitlawLocalLauncherIntegration(IntegrationTestSuite):
    pass
