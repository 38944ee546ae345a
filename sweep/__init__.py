"""bitlaw.sweep: the QAT training job and its Hydra/submitit launch.

Importing this package is cheap (no torch); the job modules import torch themselves.
Nothing here imports ``fit``: the run dir (sweep/contract.py) is the only thing the two halves share.
"""
