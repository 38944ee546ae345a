"""Where this installation keeps its configs, and which version of bitlaw it is."""

from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """The Hydra config tree (conf/), found one way wherever bitlaw runs: package data of ``sweep``.

    conf/ stays at the top of the repository; sweep/conf is a link to it, which a wheel ships as files, so a
    checkout, an editable install and an installed wheel all read it here (the app, `bitlaw plan`, and
    ``--arch bitlaw`` through fit/). Resolved, so a checkout names its top-level conf/.
    """
    from importlib.resources import files

    return Path(str(files("sweep") / "conf")).resolve()


def bitlaw_version() -> str | None:
    """The installed bitlaw distribution's version (what runs and reports record where there is no git
    checkout to name the code), or None when the code runs from a tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bitlaw")
    except PackageNotFoundError:
        return None
