"""The launcher's parts (sweep/launcher.py puts them together): the two backends behind one Job-like interface
(jobs.py), which runs must not be submitted (skip.py), the sweep's progress and outcome lines (progress.py),
and ending local runs when the submitter is stopped (signals.py)."""
