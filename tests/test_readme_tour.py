"""The README's quick start runs as written, in order (issue 28, item 9).

The commands are read from the README itself (the ```bash block under "## Quick start"), so the test fails
when a README command breaks.  They run in a fresh temporary directory, as from the top of a fresh clone:
it holds a copy of the committed results/demo (step 4 reads it; a copy, so a step that wrote there could
not touch the checkout), and everything a step writes (runs/, sweeps/, runs.csv, fit.json) lands in it.

Two things differ from a user's terminal, each on purpose:
- ``.venv/bin/python`` is this interpreter and ``.venv/bin/bitlaw`` is ``python -m bitlaw``, with the
  checkout on PYTHONPATH: the code under test, not whatever an installed script points at.  ``make
  install`` (the first step) is not run: it builds a venv from the network in minutes; it must be there,
  first, and tests/test_installed.py covers the installed package.
- The long steps are shortened by arguments appended to the README's own command (``SHORTEN``: the last
  value of a Hydra override or an option wins), so the whole quick start runs in about two minutes of CPU
  instead of five; each is explained where it is listed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from conftest import ROOT

README = ROOT / "README.md"

# The quick start's steps in order: how the README's command starts, what the test appends to shorten it,
# and phrases the README says the step prints (each is checked to be in the README's text too, so the two
# cannot drift apart).
STEPS: list[tuple[str, list[str], list[str]]] = [
    ("make install", [], []),
    (
        ".venv/bin/python -m sweep",
        # 80 optimizer steps of the default 4,096-token batch instead of 20 tokens per parameter (~120 steps):
        # ~15 s on 2 idle cores, long enough for the first 5-s progress line (40 steps, 12 s with the start,
        # once ended before it)
        ["train.tokens=327680"],
        ["[run] step ", "[run] completed in ", "final_val_loss"],
    ),
    (
        ".venv/bin/python -m sweep -m experiment=tour",
        [
            # one size (of three: the ladder's d_model 32) and two points (of three: 2-bit k-means and the
            # bf16 anchor): 2 trunks
            "model.d_model=32",
            "point=kmeans2,bf16",
            # a fifth of the tour's tokens, its two WSD branches at the same thirds of the trunk
            "train.tokens=30000",
            "train.branches=[10000,20000]",
            # the tour's step-valued schedule keys scaled with it (branches need steps, not fractions)
            "train.warmup=2",
            "quant.qat_start=4",
            "train.eval_every=5",
            # one final evaluation: three, 2 steps apart, would start before a 10-step branch's decay
            "train.final_evals=1",
        ],
        ["run(s):", "done"],
    ),
    (".venv/bin/bitlaw gather sweeps/tour -o runs.csv", [], ["wrote runs.csv:"]),
    (
        ".venv/bin/bitlaw fit results/demo/runs.csv -o fit.json",
        # 40 bootstrap refits (of 200; the fewest --bootstrap allows) from the 243-start grid (of 4,500): the
        # same fit, a wider CI
        ["--bootstrap", "40", "--grid", "coarse"],
        ["fit 'kmeans': 48 points", "95% CI [", "extrapolation to N=", "forecast error:"],
    ),
    (".venv/bin/bitlaw recommend fit.json", [], ["best: not decidable at this budget", "forecast error"]),
]


def quick_start_commands() -> list[str]:
    """The command lines of the README's quick-start block, comments and blank lines dropped."""
    match = re.search(r"^## Quick start\n+```bash\n(.*?)^```", README.read_text(), re.S | re.M)
    assert match, "README.md has no ```bash block right under '## Quick start'"
    lines = [shlex.join(shlex.split(line, comments=True)) for line in match.group(1).splitlines()]
    return [line for line in lines if line]


def to_argv(command: str) -> list[str]:
    argv = shlex.split(command)
    if argv[0] == ".venv/bin/python":
        return [sys.executable, *argv[1:]]
    if argv[0] == ".venv/bin/bitlaw":
        return [sys.executable, "-m", "bitlaw", *argv[1:]]
    raise AssertionError(f"the test does not know how to run {command!r}")


def test_the_steps_match_the_readme():
    """A new, removed or reordered README step must be taken up here (fast: no command is run)."""
    commands = quick_start_commands()
    assert len(commands) == len(STEPS), commands
    text = README.read_text()
    for command, (start, _, phrases) in zip(commands, STEPS, strict=True):
        assert command.startswith(start), (command, start)
        for phrase in phrases:
            assert phrase in text, f"README no longer says {phrase!r}"


@pytest.mark.slow
@pytest.mark.integration
def test_the_quick_start_runs_as_written(tmp_path):
    shutil.copytree(ROOT / "results" / "demo", tmp_path / "results" / "demo")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    commands = quick_start_commands()
    assert commands[0] == "make install"  # not run: see the module docstring
    for command, (_, extra, phrases) in zip(commands[1:], STEPS[1:], strict=True):
        started = time.monotonic()
        done = subprocess.run([*to_argv(command), *extra], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        said = done.stdout + done.stderr
        where = f"README step {command!r} (+ {shlex.join(extra)}), {time.monotonic() - started:.0f} s"
        assert done.returncode == 0, f"{where}: exit {done.returncode}\n{said[-3000:]}"
        for phrase in phrases:
            assert phrase in said, f"{where}: does not print {phrase!r}\n{said[-3000:]}"
    assert (tmp_path / "runs.csv").is_file() and (tmp_path / "fit.json").is_file()
