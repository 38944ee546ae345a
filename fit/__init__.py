"""bitlaw.fit: read runs, fit scaling laws, recommend a bit width under a memory budget.

Nothing in this package imports torch or ``sweep``: it works on any table with N, D, loss
(and P, format) columns, including published data from other groups.
"""
