"""``python -m sweep [-m] [overrides]``: the QAT training job as a plain Hydra app (see sweep/app.py).

A multirun goes through the launcher plugin the config selects (`hydra/launcher=local|slurm`, bitlaw's
plugin: frozen configs, skipped completed runs, an outcome for every run, progress lines); any other Hydra
sweeper or launcher plugin composes with it.
"""

from sweep.app import run_cli

raise SystemExit(run_cli())
