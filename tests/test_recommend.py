"""The recommendation: exactness against brute force, behaviour with the budget, bootstrap shares, presets,
the JSON contract and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bitlaw.cli import main
from fit.answer.fit_source import source_from_fit
from fit.answer.memory import BitAccounting, shape_bytes
from fit.answer.presets import FormatLaw, LawSource, get_preset
from fit.answer.recommend import recommend, smooth_n_eff
from fit.answer.shapes import resolve_arch
from fit.errors import InputError
from fit.fitfile import load_fit
from fit.law import capacity
from fit.units import parse_memory, parse_tokens

KMEANS = {"A": 400.0, "B": 2000.0, "E": 1.8, "alpha": 0.34, "beta": 0.37, "gamma": 3.32}
UNIFORM = {**KMEANS, "alpha": 0.33, "gamma": 3.71}


def write_fit(path: Path, fits: dict, law: str = "precision", **extra) -> Path:
    path.write_text(json.dumps({"law": law, "loss": "huber", "delta": 1e-3, "fits": fits, **extra}))
    return path


def with_samples(params: dict, k: int, spread: float, seed: int = 0) -> dict:
    """A fit entry with K synthetic bootstrap refits scattered around ``params``."""
    rng = np.random.default_rng(seed)
    samples = {name: list(value * np.exp(spread * rng.standard_normal(k))) for name, value in params.items()}
    return {**params, "bootstrap_samples": samples}


@pytest.fixture
def fit_path(tmp_path: Path) -> Path:
    return write_fit(tmp_path / "fit.json", {"kmeans": KMEANS, "uniform": UNIFORM})


def test_parse_memory_units() -> None:
    assert parse_memory("8GB") == [8e9]
    assert parse_memory("8GiB") == [8 * 2**30]
    assert parse_memory("7.5e9") == [7.5e9]
    assert parse_memory("512MiB, 1gb,2TB") == [512 * 2**20, 1e9, 2e12]
    assert parse_tokens("150B") == parse_tokens("1.5e11") == 1.5e11


@pytest.mark.parametrize("text", ["eight", "8 GBs", "-1GB", "0", "8GB,,4GB", "1e9e9"])
def test_parse_memory_rejects_garbage(text: str) -> None:
    with pytest.raises(InputError, match="--memory"):
        parse_memory(text)


@pytest.mark.parametrize("arch", ["llama3", "llama3:continuous"])
def test_recommendation_equals_brute_force_argmax_of_n_eff(fit_path: Path, arch: str) -> None:
    """At fixed D the loss-optimal (shape, bits) is the argmax of N_eff over everything that fits."""
    source = source_from_fit(load_fit(fit_path))
    shapes = resolve_arch(arch)
    acct = BitAccounting()
    bits = [1, 2, 3, 4, 5, 6, 8, 16]
    for budget in np.geomspace(1e9, 2e11, 17):
        rec = recommend(source, budget, 1e11, shapes, bits, "kmeans")
        candidates = [
            (s.n_quant * capacity(acct.p_w(b, "kmeans"), KMEANS["gamma"]), b, s.name)
            for s in shapes
            for b in bits
            if shape_bytes(s, acct.p_w(b, "kmeans")) <= budget
        ]
        _, best_bits, best_shape = max(candidates)
        assert (rec.best.bits, rec.best.shape.name) == (best_bits, best_shape), f"budget {budget:.3g}"
        assert rec.best.memory_bytes <= budget
        assert rec.best.loss == min(r.loss for r in rec.rows if r.loss is not None)


@pytest.mark.parametrize("gamma", [2.0, 3.32, 5.0])
def test_best_bit_width_falls_as_the_budget_grows(gamma: float) -> None:
    """On the smooth Llama-3 family the optimum moves monotonically towards 1 bit as M grows (the bf16
    embedding/head dominate small budgets: 1-Bit Wonder's finding), for any γ of the synthetic law."""
    source = LawSource("synthetic", {"kmeans": FormatLaw("kmeans", {**KMEANS, "gamma": gamma})})
    bits = [1, 2, 3, 4, 5, 6, 8, 16]
    anchors = resolve_arch("llama3")
    best = []
    for m in np.geomspace(6e8, 1e12, 40):
        n_eff = smooth_n_eff(source, "kmeans", m, anchors, bits, BitAccounting())
        best.append(bits[int(np.nanargmax(n_eff))])
    assert best == sorted(best, reverse=True), best
    assert best[0] >= 3 and best[-1] == 1


def test_one_bit_wins_from_8gb_with_one_bit_wonder_constants() -> None:
    """'budgets ≥ 8 GB would perform better with 1-bit weights' — on the buildable ladder too."""
    source = get_preset("1bw-kmeans")
    shapes = resolve_arch("llama3:continuous")
    for m in (8e9, 16e9, 64e9, 256e9):
        assert recommend(source, m, float("nan"), shapes, [1, 2, 3, 4, 16]).best.bits == 1
    assert recommend(source, 1e9, float("nan"), shapes, [1, 2, 3, 4, 16]).best.bits >= 3


def test_papers_memory_matched_trio_at_8gb() -> None:
    """4B bf16, 12B 4-bit and 31B 1-bit all fit ≈ 7.8 GB; the 31B 1-bit has the most N_eff (1-Bit Wonder)."""
    rec = recommend(get_preset("1bw-kmeans"), 8e9, float("nan"), resolve_arch("llama3"), [1, 4, 16])
    chosen = {r.bits: r.shape.name for r in rec.rows}
    assert chosen == {1: "31B", 4: "12B", 16: "4B"}
    assert rec.best.bits == 1 and rec.ranked_by == "N_eff"
    assert [round(r.n_eff / 1e9, 2) for r in rec.rows] == [9.12, 7.56, 3.07]
    assert all(r.loss is None for r in rec.rows)


def test_bootstrap_shares_and_ci(tmp_path: Path) -> None:
    narrow = write_fit(tmp_path / "narrow.json", {"kmeans": with_samples(KMEANS, 200, 1e-6)})
    rec = recommend(source_from_fit(load_fit(narrow)), 3e9, 1e11, resolve_arch("llama3:continuous"))
    assert rec.n_resamples == 200
    assert rec.best.win_share == 1.0
    lo, hi = rec.best.loss_ci
    assert lo <= rec.best.loss <= hi and hi - lo < 1e-4

    wide = write_fit(tmp_path / "wide.json", {"kmeans": with_samples(KMEANS, 400, 0.3, seed=1)})
    rec = recommend(source_from_fit(load_fit(wide)), 3e9, 1e11, resolve_arch("llama3:continuous"))
    shares = [r.win_share for r in rec.rows if r.shape is not None]
    assert sum(shares) == pytest.approx(1.0)
    assert sum(s > 0 for s in shares) >= 2  # γ uncertainty moves the winner between bit widths
    # Only γ decides the winner at fixed D: recompute the shares by hand from the γ draws.
    gammas = np.asarray(load_fit(wide).bootstrap_samples("kmeans")["gamma"])
    live = [r for r in rec.rows if r.shape is not None]
    n_eff = np.array([[r.n_law * capacity(r.p_w, g) for r in live] for g in gammas])
    by_hand = np.bincount(np.argmax(n_eff, axis=1), minlength=len(live)) / len(gammas)
    assert np.allclose(by_hand, shares)


def test_every_contender_gets_its_loss_ci(tmp_path: Path) -> None:
    """verify.json compares each contender's measured loss with its own CI: every row with a model has one,
    equal to the percentiles of that row's loss over the draws (recomputed by hand here)."""
    path = write_fit(tmp_path / "wide.json", {"kmeans": with_samples(KMEANS, 300, 0.05, seed=2)})
    rec = recommend(source_from_fit(load_fit(path)), 3e9, 1e11, resolve_arch("llama3:continuous"))
    live = [r for r in rec.rows if r.shape is not None]
    assert len(live) >= 3 and all(r.loss_ci is not None for r in live)
    s = load_fit(path).bootstrap_samples("kmeans")
    for r in live:
        n_eff = r.n_law * capacity(r.p_w, s["gamma"])
        losses = s["A"] * n_eff ** -s["alpha"] + s["B"] * 1e11 ** -s["beta"] + s["E"]
        assert r.loss_ci == pytest.approx(tuple(np.percentile(losses, [2.5, 97.5])), rel=1e-12)
    rows = json.loads(json.dumps([r.as_dict() for r in live]))
    assert all(len(row["loss_ci"]) == 2 for row in rows)


def test_n_convention_follows_the_fit(tmp_path: Path) -> None:
    path = write_fit(tmp_path / "fit.json", {"kmeans": KMEANS}, columns={"N": "N_total"}, n_convention="x")
    rec = recommend(source_from_fit(load_fit(path)), 8e9, 1e11, resolve_arch("llama3"), [4])
    assert rec.best.n_law == rec.best.shape.n_total


def test_presets() -> None:
    kumar = recommend(get_preset("kumar-int"), 8e9, 1.5e11, resolve_arch("llama3"))
    assert kumar.ranked_by == "loss" and all(r.loss is not None and 2.7648 < r.loss < 4 for r in kumar.rows)
    assert recommend(get_preset("1bw-uniform"), 8e9, 1.5e11, resolve_arch("llama3")).best.format == "uniform"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_text_marks_the_winner(capsys, fit_path: Path) -> None:
    code, out, err = run_cli(capsys, "recommend", str(fit_path), "--memory", "1GB,8GB", "--tokens", "1e11")
    assert code == 0, err
    assert out.count("budget ") == 2
    winners = [line for line in out.splitlines() if line.startswith("  *")]
    assert len(winners) == 2
    assert "best: " in out and "loss" in out


def test_cli_preset_says_why_no_loss(capsys) -> None:
    code, out, _ = run_cli(capsys, "recommend", "--preset", "1bw-kmeans", "--memory", "8GB")
    assert code == 0
    assert "A, B, E are unpublished" in out and "ranked by N_eff" in out
    assert "loss" not in out.split("note:")[1].split("\n", 2)[2]  # no loss column in the tables


def test_cli_json_contract(capsys, tmp_path: Path) -> None:
    path = write_fit(tmp_path / "fit.json", {"kmeans": with_samples(KMEANS, 50, 0.05)})
    argv = ["recommend", str(path), "--memory", "2GB,16GB", "--tokens", "1e11", "--json"]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    doc = json.loads(out)
    for key in ("bits", "format", "shape", "memory_bytes", "N_eff"):
        assert key in doc["best"]
    assert doc["best"] == doc["budgets"][1]["best"]  # the largest budget's winner
    assert [b["budget_bytes"] for b in doc["budgets"]] == [2e9, 16e9]
    assert all(len(b["rows"]) == 5 for b in doc["budgets"])
    assert sum(r["win_share"] for r in doc["budgets"][0]["rows"] if r["win_share"]) == pytest.approx(1.0)
    assert doc["best"]["shape"]["N_quant"] > 0 and doc["best"]["memory_bytes"] <= 16e9


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--memory", "0.5GB", "--tokens", "1e11"], "minimum budget is 854 MB"),
        (["--memory", "8 gigs", "--tokens", "1e11"], "--memory: cannot parse '8 gigs'"),
        (["--memory", "8GB", "--tokens", "1e11", "--arch", "gpt2"], "--arch: unknown architecture 'gpt2'"),
        (["--memory", "8GB", "--tokens", "1e11", "--format", "nf4"], "--format: .*'nf4'; allowed: kmeans"),
        (["--memory", "8GB", "--tokens", "1e11", "--bits", "0,4"], "--bits: '0,4'.*allowed: 1, 2"),
        (["--memory", "8GB"], "--tokens: required"),
        (["--memory", "8GB", "--tokens", "lots"], "--tokens: cannot parse"),
    ],
)
def test_cli_bad_input_is_one_line(capsys, fit_path: Path, extra: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, "recommend", str(fit_path), *extra)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_bits_outside_the_fitted_range(tmp_path: Path, capsys) -> None:
    path = write_fit(tmp_path / "fit.json", {"kmeans": {**KMEANS, "P_range": [1.25, 4.25]}})
    argv = ["recommend", str(path), "--memory", "8GB", "--tokens", "1e11", "--bits", "2,16"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "--bits: 16 lies outside the fit" in err and "allowed: 1,2,3,4" in err


def test_chinchilla_fit_and_missing_source_are_rejected(tmp_path: Path, capsys) -> None:
    chin = write_fit(tmp_path / "c.json", {"all": {k: KMEANS[k] for k in ("A", "B", "E", "alpha", "beta")}},
                     law="chinchilla")  # fmt: skip
    code, _, err = run_cli(capsys, "recommend", str(chin), "--memory", "8GB", "--tokens", "1e11")
    # any law with a bits-per-weight term answers now (issue 14 item 3); chinchilla still cannot
    laws = "(precision, efficiency, penalty, coupled)"
    assert code == 2 and f"needs a law with a bits-per-weight term {laws}" in err
    code, _, err = run_cli(capsys, "recommend", "--memory", "8GB")
    assert code == 2 and "FIT.json: required, or --preset NAME" in err
    code, _, err = run_cli(capsys, "recommend", "--preset", "chinchilla", "--memory", "8GB")
    assert code == 2 and "--preset: unknown preset 'chinchilla'; allowed: 1bw-kmeans" in err
