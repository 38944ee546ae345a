"""recommend and predict answer from any law form in fit.json (issue 14, items 3-4): efficiency and penalty
fits rank bit widths and carry a loss CI per row; where a form cannot answer, one line names what is missing;
fit.json's data_range feeds the warnings for questions far outside the fitted N and D."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bitlaw.cli import main
from fit.answer.fit_source import source_from_fit
from fit.answer.recommend import recommend
from fit.answer.shapes import resolve_arch
from fit.data.simulate import KMEANS_TRUTH, simulate
from fit.errors import InputError
from fit.fitfile import load_fit
from fit.law import predict_loss

N, D = np.geomspace(1e6, 1e8, 5), np.geomspace(1e8, 1e10, 4)


@pytest.fixture(scope="module")
def fits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("forms")
    data = root / "runs.csv"
    simulate(KMEANS_TRUTH, N, D, bits=(1, 2, 4), noise=0.003, seed=0).to_csv(data, index=False)
    out = {}
    for law in ("efficiency", "penalty", "precision", "chinchilla"):
        out[law] = root / f"{law}.json"
        by = [] if law == "chinchilla" else ["--by", "format"]
        args = ["fit", str(data), "-o", str(out[law]), "--law", law, *by, "--grid", "coarse"]
        assert main(args + ["--bootstrap", "40", "--workers", "1"]) == 0  # the fewest fit allows
    return out


@pytest.mark.parametrize("law", ["efficiency", "penalty"])
def test_recommend_ranks_with_any_form(fits: dict[str, Path], law: str) -> None:
    fitfile = load_fit(fits[law])
    rec = recommend(source_from_fit(fitfile), 8e9, 1e10, resolve_arch("llama3"), [1, 2, 4, 16])
    live = [r for r in rec.rows if r.shape is not None]
    params = fitfile.params("kmeans")
    for r in live:  # each row's loss is the law's own prediction for that candidate
        assert r.loss == pytest.approx(float(predict_loss(params, r.n_law, 1e10, r.p_w)), rel=1e-12)
        assert r.loss_ci is not None and r.loss_ci[0] <= r.loss_ci[1]
    assert rec.ranked_by == "loss" and rec.leader is min(live, key=lambda r: r.loss)


def test_efficiency_fit_names_the_missing_bit_width(fits: dict[str, Path]) -> None:
    source = source_from_fit(load_fit(fits["efficiency"]))
    with pytest.raises(InputError, match=r"--bits: .*no eff for bit width 3 \(P = 3.25\).*1.25, 2.25, 4.25"):
        recommend(source, 8e9, 1e10, resolve_arch("llama3"), [1, 3, 16])


def test_chinchilla_fit_is_refused_in_one_line(fits: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    code = main(["recommend", str(fits["chinchilla"]), "--memory", "8GB", "--tokens", "1e10"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "'chinchilla'" in err and "precision, efficiency, penalty" in err


def test_data_range_recorded_and_used(fits: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    entry = json.loads(fits["efficiency"].read_text())["fits"]["kmeans"]
    assert entry["data_range"]["N"] == [pytest.approx(N.min()), pytest.approx(N.max())]
    assert entry["data_range"]["D"] == [pytest.approx(D.min()), pytest.approx(D.max())]
    assert entry["data_range"]["P"] == [1.25, 16.0]
    args = ["recommend", str(fits["penalty"]), "--memory", "8GB", "--bits", "1,2,4,16", "--json"]
    assert main(args + ["--tokens", "1e10"]) == 0
    near = json.loads(capsys.readouterr().out)["warnings"]
    assert not any("D = " in w for w in near)
    assert main(args + ["--tokens", "1e13"]) == 0  # 1000x the largest fitted D
    far = json.loads(capsys.readouterr().out)["warnings"]
    assert any(w.startswith("D = 1e+13") for w in far)
    assert any(w.startswith("candidate model: N = ") for w in far)  # llama3 8GB models >> 1e8


def test_predict_answers_every_form(fits: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    for law in ("efficiency", "penalty"):
        assert main(["predict", str(fits[law]), "--N", "1e7", "--D", "1e9", "--P", "2.25"]) == 0
        value = float(capsys.readouterr().out.split()[0])
        truth = float(predict_loss(KMEANS_TRUTH, 1e7, 1e9, 2.25))
        assert value == pytest.approx(truth, rel=0.02)


@pytest.mark.parametrize("law", ["efficiency", "penalty"])
def test_plot_draws_from_any_form(fits: dict[str, Path], law: str, tmp_path: Path) -> None:
    """plot reads the same source: every figure that form can answer; the penalty law has no N_eff (no
    neff_vs_pw.png), the efficiency law no eff between its fitted P (no isoloss.png over a continuous P)."""
    assert main(["plot", str(fits[law]), "-o", str(tmp_path), "--memory", "1GB,8GB", "--tokens", "1e10"]) == 0
    written = sorted(p.name for p in (tmp_path).rglob("*.png"))
    assert "best_bits.png" in written
    assert ("isoloss.png" in written) == (law == "penalty")
    assert ("neff_vs_pw.png" in written) == (law == "efficiency")
