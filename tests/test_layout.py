"""The house rules that keep data flowing one way: conf -> sweep -> run dir -> fit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_top_level_modules(package: str) -> dict[str, set[str]]:
    """Top-level module names each file of `package` imports (static, including lazy imports)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                # importlib.import_module("sweep.x") style strings count as imports too
                if node.value.startswith(("sweep.", "fit.")) and " " not in node.value:
                    names.add(node.value.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package,forbidden", [("fit", {"sweep", "torch"}), ("sweep", {"fit"})])
def test_no_back_edges(package: str, forbidden: set[str]) -> None:
    offenders = {
        file: sorted(names & forbidden)
        for file, names in _imported_top_level_modules(package).items()
        if names & forbidden
    }
    assert offenders == {}, f"{package}/ must not import {sorted(forbidden)}: {offenders}"


def test_fit_imports_without_torch() -> None:
    modules = sorted(
        f"fit.{p.stem}" for p in (ROOT / "fit").glob("*.py") if p.stem not in ("__init__", "__main__")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'sweep' not in sys.modules, 'sweep was imported'\n"
        "print('ok', len(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_sweep_package_import_is_cheap() -> None:
    code = "import sys, sweep; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
