"""Fitting: the objective, the law forms, the optimizer, bootstrap refits, diagnostics, and the pipeline
from a validated table to the fit.json document (``fit.solve.pipeline``)."""
