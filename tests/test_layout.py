"""The house rules that keep data flowing one way: conf -> sweep -> run dir -> fit, with the CLI on top.

- sweep/contract/ is the run-dir contract: the only package of sweep/ that fit/ may import, and it imports
  the standard library only;
- fit/ never imports torch, and nothing of sweep/ but the contract;
- sweep/ never imports fit/ or the CLI package bitlaw/;
- nothing imports bitlaw/ (the CLI sits above both halves), and only bitlaw/ imports both halves;
- the launcher plugin (hydra_plugins/) reaches sweep/ only lazily, so Hydra's plugin scan stays cheap.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGES = ("sweep", "fit", "bitlaw", "hydra_plugins")


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(dotted modules imported at module level, dotted modules imported anywhere) by one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top: set[str] = set()
    anywhere: set[str] = set()

    def names(node: ast.AST) -> set[str]:
        if isinstance(node, ast.Import):
            return {alias.name for alias in node.names}
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            return {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            # importlib.import_module("sweep.x") and COMMANDS tables of module names count too
            if node.value.startswith(tuple(f"{p}." for p in PACKAGES)) and " " not in node.value:
                return {node.value}
        return set()

    for node in ast.walk(tree):
        anywhere |= names(node)
    for node in tree.body:
        top |= names(node)
    return top, anywhere


def _files(package: str) -> list[Path]:
    """The package's Python files; never empty, so no rule below passes on an empty walk."""
    files = sorted((ROOT / package).rglob("*.py"))
    assert any(p.name == "__init__.py" for p in files), f"no package {package}/ under {ROOT}: {files}"
    return files


def _roots(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_fit_imports_only_the_contract_from_sweep_and_never_torch() -> None:
    offenders = {}
    for path in _files("fit"):
        _, modules = _imports(path)
        bad = {m for m in modules if m.split(".")[0] in ("torch", "bitlaw")}
        bad |= {m for m in modules if m.split(".")[0] == "sweep" and m not in ("sweep", "sweep.contract")
                and not m.startswith("sweep.contract.")}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}, f"fit/ may import only sweep.contract of sweep/, not torch/bitlaw: {offenders}"


def test_sweep_never_imports_fit_or_the_cli() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(_roots(_imports(p)[1]) & {"fit", "bitlaw"})
                 for p in _files("sweep") if _roots(_imports(p)[1]) & {"fit", "bitlaw"}}
    assert offenders == {}, f"sweep/ must not import fit/ or bitlaw/: {offenders}"


def test_nothing_imports_the_cli_package() -> None:
    outside = [p for pkg in ("sweep", "fit", "hydra_plugins") for p in _files(pkg)]
    offenders = [str(p.relative_to(ROOT)) for p in outside if "bitlaw" in _roots(_imports(p)[1])]
    assert offenders == [], f"only bitlaw/ (and tests) may import bitlaw: {offenders}"


def test_the_contract_is_standard_library_only() -> None:
    modules = _files("sweep/contract")
    assert len(modules) > 1, modules  # the walk found the contract's modules
    anywhere = set().union(*(_imports(path)[1] for path in modules))
    third_party = {m for m in _roots(anywhere)
                   if m not in sys.stdlib_module_names and m not in ("__future__", "sweep")}
    assert third_party == set(), f"sweep/contract/ must import the standard library only: {third_party}"
    sweep_modules = {m for m in anywhere if m.split(".")[0] == "sweep"}
    assert all(m.startswith("sweep.contract") for m in sweep_modules), sweep_modules


def test_the_plugin_reaches_sweep_only_lazily() -> None:
    for path in _files("hydra_plugins"):
        top, _ = _imports(path)
        assert not _roots(top) & {"sweep", "fit", "bitlaw", "torch", "submitit"}, (path, top)


def test_fit_imports_without_torch() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "fit").rglob("*.py") if p.stem not in ("__init__", "__main__")
    )
    assert len(modules) > 20, modules  # the walk found fit/'s modules, subpackages included
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "leaked = sorted(m for m in sys.modules if m.startswith('sweep.') and m != 'sweep.contract'\n"
        "                and not m.startswith('sweep.contract.'))\n"
        "assert not leaked, leaked\n"
        "print('ok', len(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


@pytest.mark.parametrize("module", ["sweep", "sweep.contract", "sweep.status", "sweep.launcher",
                                    "sweep.outcomes", "sweep.submission", "sweep.app",
                                    "hydra_plugins.bitlaw_launcher.bitlaw_launcher"])
def test_orchestration_modules_import_without_torch(module: str) -> None:
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_no_code_assigns_to_an_attribute_of_an_imported_third_party_name() -> None:
    """No monkeypatching: `SomeClass.method = ...` on a name imported from another package."""
    offenders = []
    for path in [p for pkg in PACKAGES for p in _files(pkg)]:
        tree = ast.parse(path.read_text(), filename=str(path))
        imported = set()
        for node in ast.walk(tree):
            # the standard library is not another package (rebinding sys.stdout in a worker is its API)
            own = (*PACKAGES, *sys.stdlib_module_names)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] not in own:
                imported |= {alias.asname or alias.name for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {(alias.asname or alias.name).split(".")[0] for alias in node.names
                             if alias.name.split(".")[0] not in own}
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                while isinstance(target, ast.Attribute):
                    if isinstance(target.value, ast.Name) and target.value.id in imported:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                    target = target.value
    assert offenders == [], f"assignments to third-party attributes: {offenders}"
