"""The `bitlaw` console script: help, routing and one-line errors."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from bitlaw import cli

BITLAW = Path(sys.executable).with_name("bitlaw")


def test_console_script_help_runs() -> None:
    exe = str(BITLAW) if BITLAW.exists() else shutil.which("bitlaw")
    assert exe, "the bitlaw console script is not installed (pip install -e .)"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: bitlaw COMMAND")
    for name in cli.COMMANDS:
        assert f"  {name}" in out.stdout


def test_unknown_command_is_one_line_error(capsys) -> None:
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "unknown command 'frobnicate'" in err and "allowed:" in err


def test_every_registered_command_has_help() -> None:
    for name in cli.COMMANDS:
        out = subprocess.run(
            [sys.executable, "-m", "bitlaw", name, "--help"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, (name, out.stderr)
        assert f"usage: bitlaw {name}" in out.stdout


def test_a_negative_value_is_judged_by_its_option_not_by_argparse(capsys) -> None:
    assert cli.main(["recommend", "--preset", "1bw-kmeans", "--memory", "-1GB"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--memory: cannot parse '-1GB'" in err and "expected one" not in err


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (`from bitlaw.commands import plot` counts as
    bitlaw.commands.plot)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def test_no_subcommand_imports_another() -> None:
    """Shared options live in bitlaw/commands/_options.py; a command module imports no other command."""
    commands = {module.rsplit(".", 1)[1] for module, _ in cli.COMMANDS.values()}
    files = sorted((Path(cli.__file__).parent / "commands").glob("*.py"))
    assert {p.stem for p in files} >= commands and len(commands) >= 10
    offenders = {}
    for path in files:
        others = {m for m in _imported_modules(path)
                  if m.startswith("bitlaw.commands.") and m.split(".")[2] in commands - {path.stem}}
        if others:
            offenders[path.name] = sorted(others)
    assert not offenders, offenders
