"""Output paths are checked before any work, a late write failure loses no printed results, and Ctrl-C ends
fit at once (issue 28, item 6).

A read-only directory is made read-only for real: mode 555 stops a normal user, but root writes through
mode bits, so as root the command runs in a private mount namespace with the directory bind-mounted
read-only (``unshare -m``, which root has) — a read-only mount, as on a shared cluster's archive.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from bitlaw import cli
from fit.data.simulate import KMEANS_TRUTH, simulate

DEMO_RUNS = ROOT / "results" / "demo" / "runs.csv"


def _table(tmp_path: Path) -> Path:
    path = tmp_path / "runs.csv"
    simulate(KMEANS_TRUTH, np.geomspace(1e6, 1e9, 3), np.geomspace(1e8, 1e10, 3), bits=(2, 4)).to_csv(
        path, index=False
    )
    return path


def _one_line(capsys, *needles: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert all(n in err[0] for n in needles), err[0]
    assert captured.out == "", captured.out  # refused before any work: nothing was fitted or printed
    return err[0]


def _bitlaw_in_read_only(directory: Path, *argv: str) -> subprocess.CompletedProcess:
    """`python -m bitlaw ARGV` with ``directory`` read-only (see the module docstring)."""
    directory.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "bitlaw", *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    script = f"mount --bind -o ro {shlex.quote(str(directory))} {shlex.quote(str(directory))} && exec " + (
        shlex.join(command)
    )
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


# ----------------------------------------------------------------------------- checked before any work


@pytest.mark.integration
@pytest.mark.parametrize("command", ["fit", "gather"])
def test_a_read_only_output_directory_is_refused_before_any_work(tmp_path, command):
    locked = tmp_path / "locked"
    if command == "fit":
        argv = ["fit", str(_table(tmp_path)), "-o", str(locked / "fit.json"), "--bootstrap", "50"]
    else:
        argv = ["gather", str(tmp_path), "-o", str(locked / "runs.csv")]
    done = _bitlaw_in_read_only(locked, *argv)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bitlaw {command}: error: -o/--output: cannot write into "
                                               f"directory {locked}"), done.stderr
    assert done.stdout == ""  # before the fit (and its bootstrap), before the walk


def test_fit_refuses_a_directory_where_fit_json_goes(tmp_path, capsys):
    target = tmp_path / "out.json"
    target.mkdir()
    assert cli.main(["fit", str(_table(tmp_path)), "-o", str(target)]) == 2
    _one_line(capsys, "-o/--output", f"{target} is a directory")


def test_fit_creates_a_missing_output_directory(tmp_path, capsys):
    target = tmp_path / "new" / "deeper" / "fit.json"
    assert cli.main(["fit", str(_table(tmp_path)), "-o", str(target), "--grid", "coarse"]) == 0
    assert json.loads(target.read_text())["law"] == "chinchilla"
    assert not list(target.parent.glob(".bitlaw-write-test-*"))  # the probe leaves nothing behind


def test_gather_refuses_a_directory_or_a_file_in_the_path(tmp_path, capsys):
    target = tmp_path / "runs.csv"
    target.mkdir()
    assert cli.main(["gather", str(tmp_path), "-o", str(target)]) == 2
    _one_line(capsys, "-o/--output", f"{target} is a directory")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert cli.main(["gather", str(tmp_path), "-o", str(blocker / "runs.csv")]) == 2
    _one_line(capsys, "-o/--output: cannot create directory", str(blocker))


@pytest.mark.parametrize("command", ["plot", "report"])
def test_plot_and_report_refuse_a_file_where_the_directory_goes(tmp_path, capsys, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    argv = ["--preset", "1bw-kmeans"] if command == "plot" else [str(tmp_path / "fit.json")]
    if command == "report":
        assert cli.main(["fit", str(_table(tmp_path)), "-o", argv[0], "--law", "precision", "--by",
                         "format", "--grid", "coarse"]) == 0
        capsys.readouterr()
    assert cli.main([command, *argv, "-o", str(blocker)]) == 2
    _one_line(capsys, "-o/--output", f"{blocker} is a file, not a directory")


def test_verify_checks_its_outputs_before_choosing_contenders(tmp_path, capsys):
    fit = tmp_path / "fit.json"
    table = _table(tmp_path)
    assert cli.main(["fit", str(table), "-o", str(fit), "--law", "precision", "--by", "format",
                     "--grid", "coarse"]) == 0
    capsys.readouterr()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert cli.main(["verify", "plan", str(fit), "--runs", str(table), "-o", str(blocker)]) == 2
    _one_line(capsys, "-o/--output", f"{blocker} is a file, not a directory")

    plan = tmp_path / "contenders.json"
    plan.write_text(json.dumps({"contenders": []}))
    a_dir = tmp_path / "verify.json"
    a_dir.mkdir()
    assert cli.main(["verify", "check", str(plan), "--runs", str(table), "-o", str(a_dir)]) == 2
    _one_line(capsys, "-o/--output", f"{a_dir} is a directory")
    assert cli.main(["verify", "check", str(plan), "--runs", str(table), "-o", str(tmp_path / "v.json"),
                     "--report", str(a_dir)]) == 2
    _one_line(capsys, "--report", f"{a_dir} is a directory")


# ----------------------------------------------------------------------------- a write that fails late


def test_a_late_write_failure_prints_the_results_first(tmp_path, capsys, monkeypatch):
    import fit.fitfile

    def disk_full(path, document):  # what a full disk or a directory removed meanwhile gives
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(fit.fitfile, "write_fit", disk_full)
    target = tmp_path / "fit.json"
    assert cli.main(["fit", str(_table(tmp_path)), "-o", str(target), "--grid", "coarse"]) == 2
    captured = capsys.readouterr()
    assert "fit 'all':" in captured.out and "  alpha" in captured.out  # the results, printed
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "-o/--output: cannot write" in err[0] and "No space left" in err[0], err
    assert "the results above are not saved" in err[0] and not target.exists()


# ----------------------------------------------------------------------------- Ctrl-C


def _lingering(marker: str) -> list[int]:
    """Processes whose command line holds ``marker``: forked workers keep their parent's command line."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue  # it ended while we looked
    return pids


@pytest.mark.integration
def test_ctrl_c_during_the_bootstrap_exits_at_once_with_one_line(tmp_path):
    out = tmp_path / "interrupted.json"
    # the first demo's 108-run table: the current demo's 84 runs bootstrap so fast that the fit could end
    # before its progress bar's first draw
    slow = ROOT / "tests" / "data" / "demo_runs_2026_12_02.csv"
    command = [sys.executable, "-m", "bitlaw", "fit", str(slow), "-o", str(out), "--law", "precision",
               "--by", "format", "--grid", "coarse", "--bootstrap", "5000", "--progress"]
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen, deadline = b"", time.monotonic() + 120
        while b"bootstrap [" not in seen:  # the bar's first draw: the two workers are refitting
            assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")
            if select.select([proc.stderr], [], [], 1.0)[0]:
                seen += os.read(proc.stderr.fileno(), 4096)
        time.sleep(1.0)
        assert proc.poll() is None, "the bootstrap finished before it could be interrupted"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = (seen + rest).decode(errors="replace")
    assert proc.returncode == 130, stderr
    assert elapsed < 3.0, f"exited {elapsed:.1f} s after SIGINT"
    # --progress prints the fit's stage lines, then the bar; after the bar only the one line may come
    after_bar = [line for line in stderr[stderr.rindex("bootstrap ["):].split("\n")[1:] if line.strip()]
    assert after_bar == ["bitlaw fit: interrupted (Ctrl-C); nothing more was written"], stderr
    assert "Traceback" not in stderr and not out.exists()
    assert _lingering(str(out)) == []  # the workers were terminated, not left running
