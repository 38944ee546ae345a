"""Issue 14 items 6 and 8: answers carry their fit's flags, an unidentified law names no winner, predictions
far beyond the data say so, figures are honest about scale and span, and bad tables are refused whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colors
from matplotlib.figure import Figure

from bitlaw.cli import main
from fit.answer.caveats import blocking_flags, range_warnings
from fit.answer.fit_source import source_from_fit
from fit.answer.recommend import recommend
from fit.answer.shapes import resolve_arch
from fit.data.simulate import simulate
from fit.fitfile import load_fit, sha256_of
from fit.render.figure import PlotInputs
from fit.render.plot import plot_isoloss

TRUE = {"A": 400.0, "B": 2000.0, "E": 1.8, "alpha": 0.34, "beta": 0.37}
GAMMA = {"kmeans": 3.32, "uniform": 3.71}
ALPHA_ZERO = "exponent_at_zero: alpha=0: in these data loss does not fall with N, so the N term ..."


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_study(root: Path, flags: dict[str, list[str]] | None = None, alpha: float | None = None) -> Path:
    """runs.csv + a fit.json that names it (path, sha256) with the true parameters and optional flags."""
    runs = simulate({**TRUE, "gamma": 3.5}, np.geomspace(3e7, 1e9, 3), [2e9, 8e9, 3e10], bits=(1, 2, 4),
                    formats=("kmeans", "uniform"), gamma_by_format=GAMMA)  # fmt: skip
    runs.to_csv(root / "runs.csv", index=False)
    rng = np.random.default_rng(0)
    fits = {}
    for fmt, gamma in GAMMA.items():
        params = {**TRUE, "gamma": gamma, **({"alpha": alpha} if alpha is not None else {})}
        samples = {k: list(v * np.exp(0.02 * rng.standard_normal(40))) for k, v in params.items()}
        fits[fmt] = {**params, "flags": (flags or {}).get(fmt, []), "bootstrap_samples": samples,
                     "P_range": [1.25, 16.0], "identification": {}}  # as a current fit.json  # fmt: skip
    doc = {"law": "precision", "by": "format", "n_convention": "quant", "fits": fits,
           "columns": {k: k for k in ("N", "D", "loss", "P", "format", "run")},
           "data": {"path": str(root / "runs.csv"), "sha256": sha256_of(root / "runs.csv"), "dropped": {}}}
    (root / "fit.json").write_text(json.dumps(doc))  # fmt: skip
    return root / "fit.json"


@pytest.fixture
def drawn_figures(monkeypatch) -> list[tuple[Figure, Path]]:
    """Every figure fit.render.plot saves from here on, with its path, in order (each still written)."""
    import fit.render.plot as plot_module

    drawn: list[tuple[Figure, Path]] = []
    save = plot_module._save

    def record(fig: Figure, path: Path) -> Path:
        drawn.append((fig, path))
        return save(fig, path)

    monkeypatch.setattr(plot_module, "_save", record)
    return drawn


# ----------------------------------------------------------------------------- 6. honest answers


def test_alpha_zero_names_no_winner_and_claims_no_win_share(tmp_path: Path, capsys) -> None:
    """α = 0: every bit width predicts the same loss; no star, no 'wins N% of resamples', a warning line."""
    fit = write_study(tmp_path, {"kmeans": [ALPHA_ZERO]}, alpha=0.0)
    code, out, err = run_cli(capsys, "recommend", fit, "--memory", "8GB", "--tokens", "1e10")
    assert code == 0, err
    assert "best: not identified (every bit width predicts the same loss" in out
    assert "wins" not in out.split("best:")[-1]
    assert not any(line.lstrip().startswith("*") for line in out.splitlines())
    assert "warning: fit 'kmeans' is flagged exponent_at_zero" in err

    code, out, err = run_cli(capsys, "recommend", fit, "--memory", "1GB,8GB", "--tokens", "1e10", "--json")
    doc = json.loads(out)
    assert doc["best"] is None and doc["identified"] is False
    assert any(w.startswith("fit 'kmeans' is flagged exponent_at_zero") for w in doc["warnings"])
    assert not any(row["best"] for budget in doc["budgets"] for row in budget["rows"])


def test_a_flag_withholds_the_winner_but_keeps_the_point_estimate(tmp_path: Path, capsys) -> None:
    fit = write_study(tmp_path, {"kmeans": ["gamma_at_bound: gamma=0.5 sits at the lower bound 0.5"]})
    code, out, err = run_cli(capsys, "recommend", fit, "--memory", "8GB", "--tokens", "1e10", "--json")
    budget = json.loads(out)["budgets"][0]
    assert budget["best"] is None and budget["point_estimate"]["bits"] == 1
    because = budget["not_identified_because"]
    assert because == ["flagged gamma_at_bound: gamma=0.5 sits at the lower bound 0.5"]
    # the same fit for the unflagged format still recommends, with no warning about the other format
    code, out, err = run_cli(capsys, "recommend", fit, "--memory", "8GB", "--tokens", "1e10", "--format",
                             "uniform")  # fmt: skip
    assert "* " in out and "best: 1-bit uniform" in out and err == ""


def test_which_flags_block_a_ranking() -> None:
    same_for_every_width = ["exponent_at_zero: beta=0.001: ...", "few_distinct_D: only 2", "eff_above_1: x",
                            "E_unidentified: E=0"]
    assert blocking_flags(same_for_every_width) == []
    kept = ["no_16bit_anchor: no row", "exponent_at_zero: alpha=0", "gamma_at_bound: 50", "new_flag: ?"]
    assert blocking_flags(kept) == kept


def test_tied_resamples_win_for_nobody(tmp_path: Path) -> None:
    """Half the resamples at α = 0 tie; argmin used to hand each tie to the first row (1 bit)."""
    fit = write_study(tmp_path)
    doc = json.loads(fit.read_text())
    doc["fits"]["kmeans"]["bootstrap_samples"]["alpha"][::2] = [0.0] * 20
    fit.write_text(json.dumps(doc))
    source = source_from_fit(load_fit(fit))
    rec = recommend(source, 8e9, 1e10, resolve_arch("llama3"), [1, 2, 4, 16], "kmeans")
    assert rec.n_tied == 20 and sum(r.win_share for r in rec.rows if r.shape) == pytest.approx(0.5)


def test_predict_warns_beyond_ten_times_the_fitted_range(tmp_path: Path, capsys) -> None:
    fit = write_study(tmp_path)
    code, out, err = run_cli(capsys, "predict", fit, "--N", "3e8", "--D", "1e10", "--P", "2.25", "--format",
                             "kmeans")  # fmt: skip
    assert code == 0 and err == ""  # inside the data: nothing to say
    code, out, err = run_cli(capsys, "predict", fit, "--N", "2e10", "--D", "1e10", "--P", "2.25", "--format",
                             "kmeans")  # fmt: skip
    assert code == 0 and len(out.splitlines()) == 1
    assert "warning: N = 2e+10 is 20x the largest fitted N (3e+07 to 1e+09): more than 10x beyond" in err
    assert range_warnings({"D": (1e9, 1e10)}, {"D": 2e8}) == []  # 5x below: within the rule
    assert "1/20 of the smallest" in range_warnings({"D": (1e9, 1e10)}, {"D": 5e7})[0]


def test_predict_P_with_a_chinchilla_fit_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"law": "chinchilla", "fits": {"all": TRUE}}))
    code, _, err = run_cli(capsys, "predict", tmp_path / "c.json", "--N", "1e9", "--D", "1e10", "--P", "4")
    assert code == 2 and "--P:" in err and "chinchilla" in err and len(err.strip().splitlines()) == 1


def test_isoloss_panels_share_one_colour_scale_and_outline_the_data(tmp_path: Path, drawn_figures) -> None:
    fit = write_study(tmp_path)
    inputs = PlotInputs(source_from_fit(load_fit(fit)), load_fit(fit))
    assert inputs.tokens == 3e10 and inputs.params_n == 1e9  # defaults from the fit's data, not 50B/3.9B
    plot_isoloss(inputs, tmp_path / "iso.png")
    axes = [ax for ax in drawn_figures[0][0].axes if ax.get_label() != "<colorbar>"][:2]
    norms = [ax.collections[0].norm for ax in axes]
    assert norms[0] is norms[1] and isinstance(norms[0], colors.TwoSlopeNorm)
    assert all(len(ax.patches) == 1 for ax in axes)  # the box where the data are


@pytest.mark.integration
def test_neff_stars_only_inside_the_data(tmp_path: Path, capsys, drawn_figures) -> None:
    fit = write_study(tmp_path)
    code, _, err = run_cli(capsys, "plot", fit, "--data", tmp_path / "runs.csv", "-o", tmp_path / "p",
                           "--memory", "1GB,64GB")  # fmt: skip
    assert code == 0, err
    # 64 GB holds models ~100x the largest run (1e9): that optimum is not starred; the 1 GB one is
    from fit.render.plot import plot_neff_vs_pw

    inputs = PlotInputs(source_from_fit(load_fit(fit)), load_fit(fit), budgets=[1e9, 64e9])
    plot_neff_vs_pw(inputs, tmp_path / "n.png")
    figure, _ = drawn_figures[-1]  # the CLI's figures come first
    stars = [line for line in figure.axes[0].lines if line.get_marker() == "*"]
    assert len(stars) == 1 and "1 optima not starred" in figure.axes[0].get_title()


# ----------------------------------------------------------------------------- 8. bad input


@pytest.mark.parametrize("bad", ["nan", "oops"])
@pytest.mark.parametrize("command", ["plot", "report"])
def test_plot_and_report_refuse_the_table_fit_refuses(tmp_path: Path, capsys, bad: str, command: str) -> None:
    fit = write_study(tmp_path)
    table = (tmp_path / "runs.csv").read_text().splitlines()
    header = table[0].split(",")
    row = table[3].split(",")
    row[header.index("loss")] = bad
    (tmp_path / "bad.csv").write_text("\n".join([table[0], *table[1:3], ",".join(row), *table[4:]]) + "\n")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, command, fit, "--data", tmp_path / "bad.csv", "-o", out)
    reason = "missing, NaN or inf" if bad == "nan" else "not numeric"
    assert code == 2 and f"column 'loss': 1 of 63 rows are {reason} (first: data row 3)" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    code, _, err = run_cli(capsys, "fit", tmp_path / "bad.csv", "-o", tmp_path / "f.json")
    assert code == 2 and f"rows are {reason}" in err


def test_a_failing_figure_leaves_no_figures(tmp_path: Path, capsys, monkeypatch, drawn_figures) -> None:
    fit = write_study(tmp_path)
    import fit.render.plot as plot_module

    def boom(inp, path):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(plot_module, "plot_best_bits", boom)  # the last figure: the others come before it
    with pytest.raises(RuntimeError, match="drawing failed"):
        plot_module.make_plots(PlotInputs(source_from_fit(load_fit(fit)), load_fit(fit)), tmp_path / "p")
    # figures were written before the failure (else "none left" would hold trivially), and none is left
    assert [path.name for _, path in drawn_figures] == [".isoloss.png.partial", ".neff_vs_pw.png.partial"]
    assert list((tmp_path / "p").iterdir()) == []


def test_a_run_id_twice_is_refused(tmp_path: Path, capsys) -> None:
    fit = write_study(tmp_path)
    table = (tmp_path / "runs.csv").read_text().splitlines()
    (tmp_path / "doubled.csv").write_text("\n".join([*table, *table[1:]]) + "\n")
    code, _, err = run_cli(capsys, "fit", tmp_path / "doubled.csv", "-o", tmp_path / "f.json")
    assert code == 2 and "column 'run': 63 of 126 rows repeat a run at the same D" in err
    assert "data rows 1 and 64" in err and "was a sweep gathered twice?" in err
    code, _, err = run_cli(capsys, "plot", fit, "--data", tmp_path / "doubled.csv", "-o", tmp_path / "o")
    assert code == 2 and "repeat a run at the same D" in err and not (tmp_path / "o").exists()


@pytest.mark.integration
def test_a_pooled_precision_fit_is_named(tmp_path: Path, capsys) -> None:
    """A precision fit without --by format on kmeans + uniform fits one γ to both: plot and predict say so."""
    fit = write_study(tmp_path)
    doc = json.loads(fit.read_text())
    doc["by"], doc["fits"] = None, {"all": doc["fits"]["kmeans"]}
    fit.write_text(json.dumps(doc))
    code, _, err = run_cli(capsys, "predict", fit, "--N", "3e8", "--D", "1e10", "--P", "2.25")
    assert code == 0 and "warning: fit 'all' pools formats kmeans, uniform into one precision law" in err
    code, _, err = run_cli(capsys, "plot", fit, "--data", tmp_path / "runs.csv", "-o", tmp_path / "p")
    assert code == 0 and "pools formats kmeans, uniform" in err


def test_fit_without_by_on_several_formats_is_refused_not_pooled(tmp_path, capsys) -> None:
    """`--law precision` without `--by format` on kmeans and uniform rows would fit one γ to both."""
    from bitlaw.cli import main as bitlaw

    data = Path(__file__).resolve().parents[1] / "results" / "demo" / "runs.csv"
    code = bitlaw(["fit", str(data), "-o", str(tmp_path / "fit.json"), "--law", "precision"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pass --by format" in err
    assert not (tmp_path / "fit.json").exists()
