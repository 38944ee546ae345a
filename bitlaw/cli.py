"""The ``bitlaw`` console script: a thin router to one module per subcommand (bitlaw/commands/).

Subcommand modules are imported only when their command runs, so ``bitlaw --help`` and
``bitlaw fit --help`` stay fast (no pandas/scipy/matplotlib import for the top-level help).
Each module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from fit.errors import InputError

INTERRUPTED = 130  # exit status after Ctrl-C, as a shell reports a process killed by SIGINT

# name -> (module, one-line help). Add a line when a subcommand is implemented, never before.
COMMANDS: dict[str, tuple[str, str]] = {
    "gather": ("bitlaw.commands.gather", "collect run dirs into one runs table (CSV or Parquet)"),
    "fit": ("bitlaw.commands.fit", "fit a Chinchilla or precision-aware law to a table; writes fit.json"),
    "predict": ("bitlaw.commands.predict", "predicted loss at (N, D[, P]) from a fit.json"),
    "recommend": ("bitlaw.commands.recommend", "best bit width and model for a weight-memory budget"),
    "plot": ("bitlaw.commands.plot",
             "PNG figures: loss vs N, isoloss, N_eff vs P_w, pred. vs observed, best bits"),
    "report": ("bitlaw.commands.report",
               "Markdown report with figures: data, fits, extrapolation, recommendation"),
    "plan": ("bitlaw.commands.plan", "before any compute: will a grid identify the law, and at what cost"),
    "verify": ("bitlaw.commands.verify",
               "test a fit's forecast: plan memory-matched contenders, then compare their measured losses"),
    "backtest": ("bitlaw.commands.backtest", "which law forecasts best: fit small sizes, predict larger"),
    "best-lr": ("bitlaw.commands.best_lr", "the best learning rate per model size of an lr sweep"),
    "status": ("bitlaw.commands.status",
               "per-run state of a sweep dir (done/running/pending/failed/cancelled), totals"),
}


def _top_level_help() -> str:
    lines = [
        "usage: bitlaw COMMAND [options]",
        "",
        "Scaling laws for quantization-aware training: gather runs, fit laws, recommend a bit width.",
        "",
        "commands:",
    ]
    width = max((len(name) for name in COMMANDS), default=0)
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `bitlaw COMMAND --help` for a command's options."]
    return "\n".join(lines)


def attach_negative_values(args: list[str]) -> list[str]:
    """`--memory -1GB` -> `--memory=-1GB`: argparse takes a value starting with '-' for an option unless it
    is a plain number, and would say "expected one argument" instead of what is wrong with the value."""
    out: list[str] = []
    for arg in args:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.match(r"-\d", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        allowed = ", ".join(COMMANDS) or "(none yet)"
        print(f"bitlaw: error: unknown command {name!r}; allowed: {allowed}", file=sys.stderr)
        return 2
    args = None
    try:
        module = importlib.import_module(COMMANDS[name][0])
        parser = argparse.ArgumentParser(prog=f"bitlaw {name}", description=COMMANDS[name][1])
        module.add_arguments(parser)
        args = parser.parse_args(attach_negative_values(rest))
        return int(module.run(args) or 0)
    except InputError as err:
        print(f"bitlaw {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: one line, the shell's code for SIGINT (128 + 2); the worker pools were terminated on the
        # way out (fit/solve/workers.py) and the atomic writes leave no partial file. A progress bar (on a
        # terminal, or forced by --progress) is mid-line: end it first.
        lead = "\n" if sys.stderr.isatty() or getattr(args, "progress", False) else ""
        print(f"{lead}bitlaw {name}: interrupted (Ctrl-C); nothing more was written", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
