"""The run-dir contract (sweep/contract/) is the only place the protocol's names and words are spelled, and
its Summary record reads back what it writes."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from sweep import contract
from sweep.contract import Format, Summary, SummaryStatus

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_DIR = ROOT / "sweep" / "contract"

# Every file or dir name of a run dir and of a sweep dir's ledger.
PROTOCOL_NAMES = {contract.CONFIG, contract.CONFIG_JSON, contract.RUN, contract.METRICS, contract.SUMMARY,
                  contract.EXPORT, contract.LOCK_FILE, contract.JOBS_FILE, contract.OUTCOMES_FILE,
                  contract.LEDGER_DIR}


def _code_files() -> list[Path]:
    files = [p for pkg in ("sweep", "fit", "bitlaw") for p in sorted((ROOT / pkg).rglob("*.py"))
             if CONTRACT_DIR not in p.parents]
    assert len(files) > 40 and any(p.name == "train.py" for p in files), files  # the walk found the code
    return files


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string constant of a module, docstrings left out (prose may name the files)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_only_the_contract_spells_the_run_dir_file_names() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line}: {value!r}" for path in _code_files()
                 for line, value in _string_constants(path) if value in PROTOCOL_NAMES]
    assert offenders == [], "run-dir names belong in sweep/contract/ (import them):\n" + "\n".join(offenders)


def test_only_the_contract_spells_the_format_vocabulary() -> None:
    """No module builds its own list of formats: a tuple, list, set or dict holding three or more of them
    (two, such as ("kmeans", "uniform") for a comparison of those two, are not a vocabulary)."""
    offenders = [f"{path.relative_to(ROOT)}:{line}: {spelled}" for path in _code_files()
                 for line, spelled in _format_lists(path)]
    assert offenders == [], "use sweep.contract.FORMATS / Format:\n" + "\n".join(offenders)


def _format_lists(path: Path) -> list[tuple[int, list[str]]]:
    words = {str(f) for f in Format}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
            spelled = {e.value for e in items if isinstance(e, ast.Constant) and e.value in words}
            if len(spelled) >= 3:
                found.append((node.lineno, sorted(spelled)))
    return found


def test_the_scans_see_what_they_look_for(tmp_path: Path) -> None:
    """The scans above can fail: a spelt file name is found (not a docstring's), and so is a format list."""
    module = tmp_path / "m.py"
    module.write_text('"""Writes summary.json."""\nPATH = "summary.json"\n'
                      'BITS = {"none": (16,), "kmeans": (4,), "ternary": (2,)}\n')
    assert [value for _, value in _string_constants(module) if value in PROTOCOL_NAMES] == ["summary.json"]
    assert _format_lists(module) == [(3, ["kmeans", "none", "ternary"])]


def test_the_words_are_their_strings() -> None:
    """Old files, JSON and comparisons with plain strings keep working."""
    assert SummaryStatus.COMPLETED == "completed" and f"{SummaryStatus.FAILED}" == "failed"
    assert f"{Format.KMEANS:>8}" == "  kmeans" and ", ".join(contract.FORMATS).startswith("none, kmeans")
    assert json.dumps({SummaryStatus.DIVERGED: Format.TERNARY}) == '{"diverged": "ternary"}'
    assert contract.BITS_BY_FORMAT["binary"] == (1,) and contract.BIT_WIDTHS == (1, 2, 3, 4, 5, 6, 7, 8, 16)
    assert contract.TrainingEnd.STOPPED not in tuple(SummaryStatus)


# What each writer wrote before Summary existed, key for key (a reader's .get must see the same).
WRITTEN = {
    "trunk": {"status": "completed", "final_val_loss": 3.5, "final_val_loss_se": 0.01, "tokens_seen": 4096,
              "wall_s": 1.5, "reason": None, "steps": 10, "final_evals": 3, "trunk": "abc",
              "branches": {"D=1000": "completed", "D=2000": None}},
    "diverged branch": {"status": "diverged", "final_val_loss": None, "final_val_loss_se": None,
                        "tokens_seen": 2048, "wall_s": 0.5, "reason": "train loss nan", "steps": 5,
                        "final_evals": 0, "trunk": "abc", "branch": "D=1000"},
    "app failure": {"status": "failed", "final_val_loss": None, "tokens_seen": 0, "wall_s": 0.0,
                    "reason": "config: bad", "steps": 0},
    "task failure, with traceback": {"status": "failed", "final_val_loss": None, "tokens_seen": 0,
                                     "wall_s": 0.0, "reason": "config: bad", "steps": 0,
                                     "traceback_tail": "Traceback ...\nValueError: bad"},
}


@pytest.mark.parametrize("name", list(WRITTEN))
def test_summary_round_trips_each_writers_file(name: str, tmp_path: Path) -> None:
    record = Summary.from_json(WRITTEN[name])
    assert record.status is SummaryStatus(WRITTEN[name]["status"])
    assert record.to_json() == WRITTEN[name]
    contract.write_summary(tmp_path, record)
    assert contract.read_json(tmp_path / contract.SUMMARY) == WRITTEN[name]


def test_summary_keeps_keys_it_does_not_know() -> None:
    written = {"status": "failed", "reason": "x", "final_val_loss": None, "written_by": "a newer writer"}
    assert Summary.from_json(written).to_json() == written


def test_summary_refuses_a_status_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError):
        Summary.from_json({"status": "running"})
