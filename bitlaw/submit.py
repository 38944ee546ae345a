"""``python -m bitlaw.submit [--detach] [--app MODULE] [OVERRIDES...]``: a multirun of the Hydra app.

The same as ``python -m MODULE -m OVERRIDES`` (default MODULE: sweep), with ``--detach`` spelt as the
launcher key it stands for, ``hydra.launcher.detach=true``: submit to Slurm, record the job ids and return;
follow with ``bitlaw status SWEEP_DIR``. The app replaces this process (exec), so its output, signals and
exit status are the user's directly.
"""

from __future__ import annotations

import argparse
import os
import sys

_HYDRA_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}


def split_hydra_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra flags with their values, overrides): Hydra's parser wants the flags before the overrides."""
    flags: list[str] = []
    overrides: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in _HYDRA_FLAGS_WITH_VALUE:
            flags += [arg, next(it, "")]
        elif arg.startswith("-"):
            flags.append(arg)
        else:
            overrides.append(arg)
    return flags, overrides


def command(argv: list[str]) -> list[str]:
    """The app's command line for these submitter arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m bitlaw.submit",
        description="Run a Hydra multirun of the QAT job (frozen configs, completed runs skipped); "
                    "--detach submits to Slurm and returns.")
    parser.add_argument("--detach", action="store_true",
                        help="submit and return (needs hydra/launcher=slurm); then `bitlaw status DIR`")
    parser.add_argument("--app", default="sweep", help="module that runs the Hydra app (default: sweep)")
    args, rest = parser.parse_known_args(argv)
    flags, overrides = split_hydra_flags([a for a in rest if a not in ("-m", "--multirun")])
    detach = ["hydra.launcher.detach=true"] if args.detach else []
    return [sys.executable, "-m", args.app, "-m", *flags, *overrides, *detach]


def main(argv: list[str] | None = None) -> int:
    cmd = command(list(sys.argv[1:] if argv is None else argv))
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
