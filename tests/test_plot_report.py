"""`bitlaw plot` and `bitlaw report` on a small synthetic study: files exist, are PNGs, the report's links
resolve and its numbers come from the data and the fit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitlaw.cli import main
from fit.data.simulate import simulate

TRUE = {"A": 400.0, "B": 2000.0, "E": 1.8, "alpha": 0.34, "beta": 0.37}
GAMMA = {"kmeans": 3.32, "uniform": 3.71}
N_GRID = np.geomspace(3e7, 1e9, 3)
D_GRID = [2e9, 8e9, 3e10]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """runs.csv from known parameters (no noise: k-means is lower everywhere) and a hand-written fit.json
    with synthetic bootstrap samples and a leave-largest-N-out entry."""
    root = tmp_path_factory.mktemp("study")
    runs = simulate({**TRUE, "gamma": 3.5}, N_GRID, D_GRID, bits=(1, 2, 3, 4), formats=("kmeans", "uniform"),
                    gamma_by_format=GAMMA)  # fmt: skip
    runs["status"] = "completed"
    runs.to_csv(root / "runs.csv", index=False)
    rng = np.random.default_rng(0)
    fits = {}
    for fmt, gamma in GAMMA.items():
        params = {**TRUE, "gamma": gamma}
        samples = {k: list(v * np.exp(0.03 * rng.standard_normal(60))) for k, v in params.items()}
        fits[fmt] = {
            **params, "objective": 1e-6, "n_points": 45, "n_runs": 45, "converged": True, "grad_norm": 1e-11,
            "flags": ["gamma_at_bound: demo flag"] if fmt == "uniform" else [],
            "bootstrap": {k: list(np.percentile(v, [2.5, 97.5])) for k, v in samples.items()},
            "bootstrap_samples": samples,
            "extrapolation": {"held_out": "largest N", "N": float(N_GRID.max()), "n_points": 15,
                              "mape": 0.0123, "max_ape": 0.02, "params": {**params, "A": 410.0}},
        }  # fmt: skip
    doc = {
        "law": "precision", "loss": "huber", "delta": 1e-3, "n_convention": "quant",
        "columns": {"N": "N", "D": "D", "loss": "loss", "P": "P", "format": "format", "run": "run"},
        "fits": fits, "extrapolation": {"held_out": "largest N", "mape": 0.0123},
        "command": "bitlaw fit runs.csv -o fit.json --law precision --by format --bootstrap 60",
    }  # fmt: skip
    (root / "fit.json").write_text(json.dumps(doc))
    return root


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 10_000, path
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.integration
def test_plot_makes_every_figure(study: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "plots"
    code, stdout, err = run_cli(capsys, "plot", study / "fit.json", "--data", study / "runs.csv", "-o", out)
    assert code == 0, err
    names = ["loss_vs_n", "isoloss", "neff_vs_pw", "pred_vs_obs", "best_bits"]
    for name in names:
        assert_png(out / f"{name}.png")
        assert f"{name}: " in stdout
    assert sorted(p.stem for p in out.iterdir()) == sorted(names)


@pytest.mark.integration
def test_plot_from_a_preset_draws_the_memory_figures(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "plot", "--preset", "1bw-kmeans", "-o", tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_bits.png", "neff_vs_pw.png"]
    assert_png(tmp_path / "neff_vs_pw.png")


@pytest.mark.integration
def test_report_links_resolve_and_numbers_come_from_the_inputs(study: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results"
    code, stdout, err = run_cli(capsys, "report", study / "fit.json", "--data", study / "runs.csv", "-o", out,
                                "--memory", "1GB,8GB,64GB", "--tokens", "3e10",
                                "--preceded-by", "python -m sweep -m experiment=demo",
                                "--preceded-by", "bitlaw gather sweeps/demo -o runs.csv")  # fmt: skip
    assert code == 0, err
    report = (out / "report.md").read_text()
    assert stdout.strip() == f"wrote {out / 'report.md'}"
    # Provenance: date, machine and code version, then every command in the order they ran.
    assert re.search(r"Made \d{4}-\d\d-\d\d \d\d:\d\d UTC on .+ CPU cores\), Python 3\.\d+", report)
    block = report.split("```sh\n")[1].split("```")[0].splitlines()
    assert block[:3] == ["python -m sweep -m experiment=demo", "bitlaw gather sweeps/demo -o runs.csv",
                         "bitlaw fit runs.csv -o fit.json --law precision --by format --bootstrap 60"]

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(links) == 6  # the five figures + eff_vs_gamma (issue 14 item 2)
    assert "plots/eff_vs_gamma.png" in links

    # Law forms: all four fitted to the same rows, per format, held-out MAPE and AIC/BIC, and a verdict.
    for fmt in ("kmeans", "uniform"):
        forms = report.split(f"### Law forms, {fmt}")[1].split("###")[0]
        table = [line for line in forms.splitlines() if line.startswith("| ") and "---" not in line][1:]
        forms_named = sorted(line.split(" | ")[0][2:].split(" (k = ")[0] for line in table)
        assert forms_named == ["coupled", "efficiency", "penalty", "precision"]
        assert all(re.search(r"\| -?\d[\d.]* \| [\d.e+]+ \|", line) for line in table)  # AIC, ΔAIC
        preferred = r"The data prefer the \*\*(precision|efficiency|penalty|coupled)\*\* form by AIC"
        assert re.search(preferred, forms)
    for link in links:
        assert not Path(link).is_absolute()
        assert_png(out / link)

    # The exact commands: the fit's recorded one and this report's own.
    assert "bitlaw fit runs.csv -o fit.json --law precision --by format --bootstrap 60" in report
    assert f"bitlaw report {study / 'fit.json'} --data {study / 'runs.csv'} -o {out} --memory 1GB,8GB,64GB " \
           "--tokens 3e10" in report  # fmt: skip

    assert "Run status: completed 81." in report
    # γ against 1-Bit Wonder, with the synthetic bootstrap CI.
    assert re.search(r"\| kmeans \| 3\.32 \| \[[0-9.]+, [0-9.]+\] \| 3\.32 \| yes \|", report)
    assert "| uniform | 1e+09 | 15 | 1.23% | 2.00% |" in report
    assert "**flag** gamma_at_bound: demo flag" in report
    # Observed gap: noise-free data with γ_kmeans < γ_uniform, so k-means wins every matched cell.
    assert "k-means is lower in 36 of 36 matched (N, D, bits) cells" in report
    # Recommendation table: one row per budget per format; 1-bit wins at 8 GB (1-Bit Wonder's regime).
    kmeans_table = report.split("### kmeans")[-1].split("###")[0]
    rows = [line for line in kmeans_table.splitlines() if line.startswith("| ") and "GB" in line]
    assert [r.split(" | ")[0] for r in rows] == ["| 1 GB", "| 8 GB", "| 64 GB"]
    assert rows[1].split(" | ")[1] == "1-bit"
    assert re.search(r"1: \d+%", rows[1])


@pytest.mark.integration
def test_report_without_data_still_links_its_figures(study: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "report", study / "fit.json", "-o", tmp_path, "--memory", "2GB,16GB")
    assert code == 0, err
    report = (tmp_path / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert sorted(Path(link).name for link in links) == ["best_bits.png", "isoloss.png", "neff_vs_pw.png"]
    assert all((tmp_path / link).is_file() for link in links)
    assert "## Data" not in report


@pytest.mark.parametrize(
    "argv, message",
    [
        (["plot", "--preset", "1bw-kmeans", "--data", "runs.csv", "-o", "x"], "--data: needs FIT.json"),
        (["plot", "fit.json", "--data", "missing.csv", "-o", "x"], "DATA missing.csv: no such file"),
        (["plot", "fit.json", "-o", "x", "--arch", "gpt2"], "--arch: unknown architecture 'gpt2'"),
        (["report", "fit.json", "-o", "x", "--memory", "lots"], "--memory: cannot parse 'lots'"),
        (["report", "chinchilla.json", "-o", "x"], "needs a law with a bits-per-weight term"),
        (["report", "nope.json", "-o", "x"], "fit file nope.json does not exist"),
        (["report", "fit.json", "--data", "runs.csv", "-o", "x", "--forms", "fit.json"],
         "--forms: fit.json is a 'precision' fit; allowed: one fit of each form other than"),
        (["report", "fit.json", "-o", "x", "--forms", "fit.json"], "--forms: needs --data"),
    ],
)
def test_bad_input_is_one_line(study: Path, tmp_path: Path, monkeypatch, capsys, argv, message) -> None:
    monkeypatch.chdir(study)
    (study / "chinchilla.json").write_text(json.dumps({"law": "chinchilla", "fits": {"all": TRUE}}))
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (study / "x").exists()  # nothing half-written


def test_recommend_does_not_import_matplotlib_or_pandas() -> None:
    code = (
        "import sys\nfrom bitlaw.cli import main\n"
        "main(['recommend', '--preset', '1bw-kmeans', '--memory', '8GB'])\n"
        "assert 'matplotlib' not in sys.modules and 'pandas' not in sys.modules, 'heavy import'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.integration
def test_single_fit_for_all_formats(study: Path, tmp_path: Path, capsys) -> None:
    """A fit without --by format (fits['all']) serves every figure and the recommendation table."""
    doc = json.loads((study / "fit.json").read_text())
    doc["fits"] = {"all": doc["fits"]["kmeans"]}
    (tmp_path / "all.json").write_text(json.dumps(doc))
    argv = ["report", tmp_path / "all.json", "--data", study / "runs.csv", "-o", tmp_path / "r"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    report = (tmp_path / "r" / "report.md").read_text()
    assert len(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)) == 5
    assert "### all" in report and "| 8 GB | 1-bit |" in report


@pytest.mark.integration
def test_report_compares_given_form_fits_as_they_are(study: Path, tmp_path: Path, capsys) -> None:
    """--forms: the efficiency fit is used as given (its AIC appears in the table), not refitted."""
    runs = study / "runs.csv"
    for law in ("precision", "efficiency"):
        code, _, err = run_cli(capsys, "fit", runs, "-o", tmp_path / f"{law}.json", "--law", law,
                               "--by", "format")  # fmt: skip
        assert code == 0, err
    given = json.loads((tmp_path / "efficiency.json").read_text())
    out = tmp_path / "results"
    code, _, err = run_cli(capsys, "report", tmp_path / "precision.json", "--data", runs, "-o", out,
                           "--forms", tmp_path / "efficiency.json")  # fmt: skip
    assert code == 0, err
    report = (out / "report.md").read_text()
    assert f"--forms {tmp_path / 'efficiency.json'}" in report  # the report's own command line says so
    for fmt in ("kmeans", "uniform"):
        forms = report.split(f"### Law forms, {fmt}")[1].split("###")[0]
        row = next(line for line in forms.splitlines() if line.startswith("| efficiency |"))
        aic = float(row.split("|")[4])  # | form | k | held-out MAPE | AIC | ...: printed to 2 decimals
        assert aic == pytest.approx(given["fits"][fmt]["information"]["aic"], abs=0.005)
