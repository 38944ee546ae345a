"""benchmarks/gpu_step.py runs in its CPU mode on a tiny rung (what CI can execute; figures, no targets)."""

from __future__ import annotations

import importlib.util

from conftest import ROOT


def test_gpu_step_benchmark_runs_on_cpu_with_a_tiny_rung(capsys) -> None:
    spec = importlib.util.spec_from_file_location("gpu_step", ROOT / "benchmarks" / "gpu_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--device", "cpu", "--models", "tiny", "--modes", "eager", "--steps", "1", "--warmup", "1",
                 "--batch-tokens", "256", "--micro-batch-tokens", "128", "--seq-len", "64", "--threads", "1"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "ms/step" in line]
    assert [line.split()[1].rstrip(":") for line in lines] == [
        "bf16", "kmeans1", "kmeans2", "kmeans3", "kmeans4", "uniform1", "uniform2", "uniform3", "uniform4"]
    assert all("tok/s" in line and "peak memory" in line for line in lines)
    assert "2-rank DDP step: skipped (0 GPU(s) here; it needs 2)" in out
