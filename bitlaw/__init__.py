"""bitlaw's command line: the one package above both halves (sweep/ trains, fit/ analyses).

It is the only code that imports both; nothing imports it. Entry points: the ``bitlaw`` console script
(``bitlaw.cli:main``, also ``python -m bitlaw``) and ``python -m bitlaw.submit`` (a multirun with
``--detach``); ``python -m sweep`` stays the plain Hydra app.
"""
