"""``python -m sweep``: the QAT training job as a Hydra app (see sweep/app.py)."""

from sweep.app import main

if __name__ == "__main__":
    main()
