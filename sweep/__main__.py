"""``python -m sweep``: the QAT training job as a Hydra app (see sweep/app.py).

A multirun (``-m``/``--multirun``) goes through ``sweep.submit``, so the contract command
``python -m sweep -m …`` gets frozen configs, skipped completed runs, an outcome for every run and
progress lines, on the local launcher and on Slurm alike. A single run goes straight to the app.
"""

import sys

MULTIRUN_FLAGS = ("-m", "--multirun")

if __name__ == "__main__":
    args = sys.argv[1:]
    if any(flag in args for flag in MULTIRUN_FLAGS):
        from sweep.submit import main as submit

        raise SystemExit(submit([a for a in args if a not in MULTIRUN_FLAGS]))
    from sweep.app import main

    main()
