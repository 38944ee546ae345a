"""The docs point at things that exist: every relative link and every repo path in README.md and docs/*.md,
and every "docs/X.md §N" reference anywhere in the repo names a file and a section it has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The changes log names files as they were (fit/engine.py, sweep/submit.py): its paths are history.
CURRENT_DOCS = [doc for doc in DOCS if doc.name != "CHANGES.md"]
# Outputs the commands in docs/cli.md create (git-ignored), not files of the repo.
OUTPUTS = {"results/mine/"}

LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
# A path the docs name in code spans or prose: top-level folder, then path parts, ending in a file suffix
# or a slash.  Brace lists ({a,b}.py), alternatives (a|b), globs and placeholders (<run>, NAME) are not
# single paths.
PATH = re.compile(
    r"(?<![\w./{-])((?:sweep|fit|bitlaw|conf|hydra_plugins|scripts|benchmarks|tests|results|docs)"
    r"/[\w./-]*[\w/])(?![\w{<*|'])"
)
SECTION_REF = re.compile(r"(?:docs/)?(method|architecture|performance|cli)\.md §(\d+)")


def _links(doc: Path) -> list[str]:
    return [t for t in LINK.findall(doc.read_text()) if "://" not in t]


def _paths(doc: Path) -> list[str]:
    found = [p.rstrip(".") for p in PATH.findall(doc.read_text())]
    return [p for p in found if p not in OUTPUTS and not re.search(r"/[A-Z_]+\.", p)]


def test_every_relative_link_exists() -> None:
    checked = [(doc, target) for doc in DOCS for target in _links(doc)]
    assert len(checked) > 20, f"found only {len(checked)} links: the pattern no longer matches the docs"
    missing = [f"{doc.name}: {t}" for doc, t in checked if not (doc.parent / t).exists()]
    assert not missing, missing


def test_every_repo_path_in_the_docs_exists() -> None:
    checked = [(doc, p) for doc in CURRENT_DOCS for p in _paths(doc)]
    assert len(checked) > 100, f"found only {len(checked)} paths: the pattern no longer matches the docs"
    missing = sorted({f"{doc.name}: {p}" for doc, p in checked if not (ROOT / p).exists()})
    assert not missing, missing


def _sections(name: str) -> set[str]:
    text = (ROOT / "docs" / f"{name}.md").read_text()
    return set(re.findall(r"^## (\d+)\.", text, flags=re.MULTILINE))


def test_every_section_reference_names_an_existing_section() -> None:
    sources = [
        p for p in ROOT.rglob("*")
        if p.suffix in {".py", ".md", ".yaml", ".sh"} and p.is_file()
        and not {".git", ".venv", "sweeps"} & set(p.relative_to(ROOT).parts)
    ]
    refs = [(src, m) for src in sources for m in SECTION_REF.findall(src.read_text(errors="replace"))]
    assert len(refs) > 20, f"found only {len(refs)} section references"
    sections = {name: _sections(name) for name in {name for _, (name, _) in refs}}
    bad = [f"{src.relative_to(ROOT)}: {name}.md §{n}" for src, (name, n) in refs if n not in sections[name]]
    assert not bad, bad
