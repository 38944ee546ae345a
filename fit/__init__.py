"""bitlaw.fit: read runs, fit scaling laws, recommend a bit width under a memory budget.

Nothing in this package imports torch. Of ``sweep`` it imports only ``sweep.contract``, the torch-free run-dir
contract (file names, run ids, P_w and parameter counts; tests/test_layout.py enforces the edge), so it works
on any table with N, D, loss (and P, format) columns, including published data from other groups.
"""
