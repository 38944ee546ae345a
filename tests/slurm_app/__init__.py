"""A stand-in for the QAT job, for orchestration tests: a Hydra app with the run-dir contract and no torch.

It writes `run.json`, `metrics.jsonl` and `summary.json` like the real job (sweep/contract.py) and can raise,
sleep, or train a few "steps" with checkpoints, so launching, skipping and status logic can be tested on
the real cluster in seconds. Payload tests that need real training use `python -m sweep` itself.
"""
