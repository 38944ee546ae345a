"""experiment=cluster: every rung follows the per-size recipe (docs/method.md §5) and composes into a valid
branched job; `bitlaw plan --cost` prices the grid and the branches' saving."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sweep.app import CONF_DIR
from sweep.config import from_dict
from sweep.contract import param_counts
from sweep.recipe import register_resolvers
from sweep.train import branch_plan

RUNGS = ("l30m", "l60m", "l110m", "l220m", "l500m", "l1b")


def recipe(n: float) -> dict:
    """OLMo-core's ladder rule (Porian et al. 2024), with the batch rounded to a power of two sequences."""
    sequences = 2 ** round(math.log2(160 * (n / 108e6) ** (2 / 3)))
    batch = sequences * 2048
    return {"batch_tokens": batch, "lr": 0.0047 * (n / 108e6) ** (-1 / 3) / 2,
            "warmup": round(min(n, 1.5e8) / batch), "beta2": 0.95 if batch >= 524288 else 0.99,
            "eval_every": round(26e9 / batch / 50), "final_eval_spacing": max(1, round(1.5e9 / batch / 100))}


def job(*overrides: str) -> dict:
    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=cluster", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("rung", RUNGS)
def test_each_rung_carries_the_per_size_recipe_and_composes_into_a_valid_branched_job(rung: str, tmp_path):
    model = yaml.safe_load((ROOT / "conf" / "model" / f"{rung}.yaml").read_text())
    n = param_counts(model["d_model"], model["n_layers"], model["n_heads"], model["n_kv_heads"],
                     model["ffn_dim"], model["vocab_size"])["N_nonembed"]
    token_file = tmp_path / "tokens.bin"
    # 1M uint16 ids (sparse zeros): enough for one validation window at seq_len 2048
    with open(token_file, "wb") as f:
        f.truncate(2 * 1_000_000)
    cfg = job(f"rung={rung}", "point=kmeans2", f"data.path={token_file}")
    assert cfg["model"]["d_model"] == model["d_model"]
    want = recipe(n)
    t = cfg["train"]
    assert t["batch_tokens"] == want["batch_tokens"] and t["warmup"] == want["warmup"]
    assert t["beta2"] == want["beta2"] and t["lr"] == pytest.approx(want["lr"], rel=2e-3)
    assert (t["eval_every"], t["final_eval_spacing"]) == (want["eval_every"], want["final_eval_spacing"])
    assert t["batch_tokens"] % t["micro_batch_tokens"] == 0
    plan = branch_plan(from_dict(cfg))  # the QAT switch and final evaluations fit every branch
    assert all(b.steps * t["batch_tokens"] >= d for b, d in zip(plan, (1.5e9, 3e9, 6.5e9, 13e9), strict=True))


@pytest.mark.slow  # composes the 54 jobs of the grid (~20 s of CPU)
def test_plan_cost_prices_the_cluster_grid_and_the_saving_from_branches() -> None:
    command = ["plan", "experiment=cluster", "--cost", "--mfu", "0.4", "--json"]
    out = subprocess.run([sys.executable, "-m", "bitlaw", *command], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    cost = json.loads(out.stdout)["compute"]
    assert (cost["runs"], cost["trunks"]) == (270, 54)
    assert "attention" in cost["flops_formula"] and "40 % MFU" in cost["throughput"]
    assert cost["separate_runs_tokens"] > cost["tokens"] and 0.3 < cost["saving"] < 0.5
    assert cost["hours"] == pytest.approx(cost["flops"] / (0.4 * 989e12) / 3600)
