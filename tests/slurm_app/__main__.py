"""`python -m tests.slurm_app [overrides]`: Hydra's entry with sweep's one-line errors (sweep.app.run_cli)."""

from sweep.app import run_cli
from tests.slurm_app.app import main

raise SystemExit(run_cli(main))
