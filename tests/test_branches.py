"""Several token budgets from one run (sweep/branches.py): each WSD cooldown branch equals the standalone run
of its budget, survives a requeue anywhere, and every bad setting is one line before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_config

from sweep.branches import plan_branches
from sweep.config import ConfigError
from sweep.contract import compute_run_id
from sweep.meters import MACHINE_FIELDS
from sweep.train import train

pytestmark = pytest.mark.slow  # ~35 s of real training on 2 cores

# the tiny rung, 1024-token steps: a 48-step trunk with branches at 24 and 32 steps (decay 20 %: forks at
# steps 19 and 26), QAT from step 6, warmup 4 steps, the curve every 8 steps, final evaluations 1 step apart
BRANCHED = ["model=tiny", "train.batch_tokens=1024", "train.seq_len=64", "train.threads=1",
            "train.schedule=wsd", "train.warmup=4", "train.eval_every=8", "train.eval_tokens=2048",
            "train.mid_eval_tokens=1024", "train.final_eval_spacing=1", "train.log_every=1",
            "data.max_bytes=2000000", "logger.wandb.mode=disabled", "quant.qat_start=6", "point=kmeans2"]
TRUNK = ["train.tokens=49152", "train.branches=[24576,32768]"]


def config(*overrides: str) -> dict:
    return compose_config(*BRANCHED, *overrides)


def rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in MACHINE_FIELDS} for line in lines]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def branched(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("branched")
    assert train(config(*TRUNK), run_dir)["status"] == "completed"
    return run_dir


@pytest.mark.parametrize("tokens,name", [(24576, "D=24576"), (32768, "D=32768")])
def test_a_branch_equals_the_standalone_run_of_its_budget(branched, tmp_path, tokens, name) -> None:
    standalone_cfg = config(f"train.tokens={tokens}")
    standalone = train(standalone_cfg, tmp_path / "standalone")
    branch_dir = branched / "branches" / name
    got = summary(branch_dir)
    assert got["status"] == "completed" and got["final_val_loss"] == standalone["final_val_loss"]
    assert got["steps"] == standalone["steps"] and got["tokens_seen"] == standalone["tokens_seen"] == tokens
    assert got["final_val_loss_se"] == standalone["final_val_loss_se"] > 0
    assert rows(branch_dir) == rows(tmp_path / "standalone")  # every step's losses, lr, phase and evals
    info = json.loads((branch_dir / "run.json").read_text())
    trunk_id = json.loads((branched / "run.json").read_text())["run_id"]
    # the branch is the standalone experiment: same run id, its trunk named
    assert info["run_id"] == compute_run_id(standalone_cfg) and info["trunk"] == trunk_id
    assert info["D"] == tokens and info["branch"] == name


def test_the_trunk_ends_as_an_unbranched_run_and_counts_its_tokens(branched, tmp_path) -> None:
    plain = train(config("train.tokens=49152"), tmp_path / "plain")
    assert summary(branched)["final_val_loss"] == plain["final_val_loss"]
    assert rows(branched) == rows(tmp_path / "plain")
    info = json.loads((branched / "run.json").read_text())
    # 48 trunk steps + the decays (24 - 19) + (32 - 26), against 48 + 24 + 32 steps as separate runs
    assert info["tokens_trained"] == 1024 * (48 + 5 + 6)
    assert info["tokens_as_separate_runs"] == 1024 * (48 + 24 + 32)
    assert summary(branched)["branches"] == {"D=24576": "completed", "D=32768": "completed"}


@pytest.mark.parametrize("stops", [[21], [10, 3, 7, 30]], ids=["inside-a-branch", "trunk-and-branches"])
def test_a_stopped_and_resumed_run_ends_as_the_uninterrupted_one(branched, tmp_path, stops) -> None:
    run_dir = tmp_path / "resumed"
    for limit in stops:  # stop after `limit` steps of each process, as a requeue would
        assert train(config(*TRUNK, f"train.max_steps_this_run={limit}"), run_dir)["status"] == "stopped"
    assert train(config(*TRUNK), run_dir)["status"] == "completed"
    for sub in ("", "branches/D=24576", "branches/D=32768"):
        assert summary(run_dir / sub)["final_val_loss"] == summary(branched / sub)["final_val_loss"], sub
        assert rows(run_dir / sub) == rows(branched / sub), sub


@pytest.mark.parametrize("overrides,said", [
    (["train.schedule=cosine"], "train.branches needs train.schedule=wsd"),
    (["train.branches=[49152]"], "train.branches: 49152 is not below train.tokens (49152)"),
    (["train.branches=[4096]"], "train.branches: 4096 tokens are 4 steps, shorter than warmup (4)"),
    (["train.branches=[abc]"], "train.branches: 'abc' is not a number of tokens"),
    (["train.decay_fraction=1.5"], "train.decay_fraction must be in (0, 1], got 1.5"),
    (["train.warmup=0.1"], "train.warmup: 0.1 is a fraction of the run"),
    (["quant.qat_start=0.25"], "quant.qat_start: 0.25 is a fraction of the run"),
    (["train.final_evals=8"], "train.final_eval_spacing: the last 8 evaluations of branch D=24576"),
])
def test_bad_branch_settings_are_one_line_before_training(tmp_path, overrides, said) -> None:
    with pytest.raises(ConfigError) as err:
        train(config(*TRUNK, *overrides), tmp_path / "bad")
    assert said in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_plan_sorts_branches_and_places_each_fork_at_its_decay() -> None:
    from types import SimpleNamespace

    t = SimpleNamespace(schedule="wsd", tokens=1e6, branches=["5e5", 250000], batch_tokens=1000,
                        decay_fraction=0.2, warmup=10, eval_every=50, final_eval_spacing=2)
    plan = plan_branches(t, "kmeans", 100)
    assert [(b.tokens, b.steps, b.fork_step) for b in plan] == [(250000, 250, 200), (500000, 500, 400)]


def test_gather_gives_one_row_per_branch_and_trunk_with_the_trunk_named(branched) -> None:
    from fit.data.gather import gather

    result = gather([branched])
    assert not result.skipped, result.skipped
    rows_by_d = {row["D"]: row for row in result.rows}
    assert sorted(rows_by_d) == [24576, 32768, 49152]
    trunk_id = json.loads((branched / "run.json").read_text())["run_id"]
    assert {row["trunk"] for row in result.rows} == {trunk_id}
    assert len({row["run"] for row in result.rows}) == 3  # run stays unique per row
    assert [rows_by_d[d]["branch"] for d in sorted(rows_by_d)] == ["D=24576", "D=32768", None]
    assert all(row["seed"] == 0 and row["final_val_loss_se"] > 0 for row in result.rows)


def test_seeds_are_separate_trunks() -> None:
    """train.seed sweeps like any key: each seed is another experiment (run id), hence its own trunk."""
    ids = {compute_run_id(config(*TRUNK, f"train.seed={seed}")) for seed in (0, 1, 2)}
    assert len(ids) == 3
