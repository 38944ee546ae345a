"""What is checked before anything is queued or trained (sweep/preflight.py, sweep/config.py): the user's
token file, the W&B key of an online run, the output dirs, the ranges of train.* and hydra.launcher.parallel;
and the resume command a stopped single run prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, compose_config

from sweep.config import ConfigError, from_dict
from sweep.data import DataConfig, token_file_problem, token_id_problem
from sweep.preflight import check_inputs, output_dir_problem
from sweep.slurm import SubmissionError
from sweep.wandb_logger import MISSING_KEY, api_key_source

VOCAB = 50257
IDS = np.random.default_rng(0).integers(0, VOCAB, size=100_000)


def token_file(tmp_path: Path, ids: np.ndarray, dtype: type, name: str = "train.bin") -> Path:
    path = tmp_path / name
    ids.astype(dtype).tofile(path)
    return path


def problem(path: Path, dtype: str, vocab_size: int = VOCAB, seq_len: int = 64,
            val_fraction: float = 0.005) -> str | None:
    config = DataConfig(corpus="tokens", path=str(path), dtype=dtype, val_fraction=val_fraction)
    return token_file_problem(config, seq_len) or token_id_problem(config, vocab_size)


def test_a_well_formed_token_file_passes(tmp_path) -> None:
    assert problem(token_file(tmp_path, IDS, np.uint16), "uint16") is None
    assert problem(token_file(tmp_path, IDS, np.uint32, "wide.bin"), "uint32") is None


def test_a_missing_file_or_a_directory_names_data_path(tmp_path) -> None:
    assert problem(tmp_path / "nope.bin", "uint16").startswith("data.path: no such file")
    assert problem(tmp_path, "uint16").startswith(f"data.path: {tmp_path} is not a file")


def test_an_empty_file_names_data_path(tmp_path) -> None:
    (tmp_path / "empty.bin").write_bytes(b"")
    assert problem(tmp_path / "empty.bin", "uint16") == (
        f"data.path: {tmp_path / 'empty.bin'} is empty (0 bytes); point data.path at a flat file of "
        "token ids")


def test_a_size_not_a_multiple_of_the_dtype_names_data_dtype(tmp_path) -> None:
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    said = problem(tmp_path / "odd.bin", "uint16")
    assert said.startswith("data.dtype=uint16: ") and "3 bytes, not a multiple of uint16's 2" in said
    assert "uint8, uint16, uint32" in said
    # an odd number of uint16 ids read as uint32: whole uint16 ids, so that is the hint
    said = problem(token_file(tmp_path, IDS[:100_001], np.uint16), "uint32")
    assert said.endswith("it looks like uint16; set data.dtype=uint16")


def test_ids_at_or_above_the_vocabulary_name_model_vocab_size(tmp_path) -> None:
    ids = IDS.copy()
    ids[123] = 70_000
    said = problem(token_file(tmp_path, ids, np.uint32), "uint32")
    assert said.startswith(f"model.vocab_size ({VOCAB}) must exceed every id") and "is 70000" in said
    assert "at least 70001" in said
    said = problem(token_file(tmp_path, IDS, np.uint16, "small_vocab.bin"), "uint16", vocab_size=1000)
    assert said.startswith("model.vocab_size (1000)") and f"at least {IDS.max() + 1}" in said


def test_a_uint16_file_read_as_uint32_says_set_dtype_uint16(tmp_path) -> None:
    said = problem(token_file(tmp_path, IDS, np.uint16), "uint32")
    assert said.startswith("data.dtype=uint32: ")
    assert said.endswith("it looks like uint16; set data.dtype=uint16")


def test_a_uint32_file_read_as_uint16_says_set_dtype_uint32(tmp_path) -> None:
    # every id fits when read as uint16 (the high halves are 0): only the pattern gives it away
    said = problem(token_file(tmp_path, IDS, np.uint32), "uint16")
    assert said.startswith("data.dtype=uint16: every second uint16 id")
    assert said.endswith("it looks like uint32; set data.dtype=uint32")


def test_a_file_too_short_for_a_validation_window_names_val_fraction(tmp_path) -> None:
    said = problem(token_file(tmp_path, IDS[:1000], np.uint16), "uint16")
    assert said.startswith("data.path: ") and "fewer than train.seq_len + 1 = 65" in said
    assert "raise data.val_fraction" in said


def test_a_rewritten_file_is_read_again(tmp_path) -> None:
    path = token_file(tmp_path, IDS, np.uint16)
    assert problem(path, "uint16") is None
    bad = IDS.copy()
    bad[0] = 60_000
    bad[:2000].astype(np.uint16).tofile(path)  # another size (and mtime): the cached scan does not apply
    assert problem(path, "uint16", val_fraction=0.1).startswith(f"model.vocab_size ({VOCAB})")


def test_the_largest_id_of_100_mb_is_cheap(tmp_path) -> None:
    import time

    path = token_file(tmp_path, np.resize(IDS, 50_000_000), np.uint16)
    started = time.perf_counter()
    assert problem(path, "uint16") is None
    assert time.perf_counter() - started < 5  # ~0.01 s from the page cache; a grid reads it once


def test_the_job_itself_checks_the_files_size(tmp_path) -> None:
    (tmp_path / "empty.bin").write_bytes(b"")
    cfg = compose_config("data=tokens", f"data.path={tmp_path / 'empty.bin'}", f"model.vocab_size={VOCAB}")
    with pytest.raises(ConfigError, match=r"^data\.path: .* is empty"):
        from_dict(cfg)


def test_online_wandb_without_a_key_is_refused_with_the_way_out(tmp_path, monkeypatch) -> None:
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb"))
    job = from_dict(compose_config("logger.wandb.mode=online"))
    assert api_key_source() is None
    with pytest.raises(ConfigError) as err:
        check_inputs(job, local=True)
    assert str(err.value) == MISSING_KEY and "logger.wandb.mode=offline" in MISSING_KEY
    assert "WANDB_API_KEY" in MISSING_KEY
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    assert api_key_source() == str(tmp_path / "netrc")
    check_inputs(job, local=True)
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert api_key_source() == "WANDB_API_KEY"
    check_inputs(job, local=True)
    monkeypatch.delenv("WANDB_API_KEY")
    check_inputs(from_dict(compose_config("logger.wandb.mode=offline")), local=True)  # needs no key


@pytest.mark.parametrize("override, says", [
    ("train.weight_decay=-0.1", "train.weight_decay must be >= 0 (0 = none), got -0.1"),
    ("train.warmup=-1",
     "train.warmup must be >= 0 (a fraction of the steps < 1, or a step count >= 1), got -1"),
    ("train.beta1=1.0", "train.beta1 must be in [0, 1), got 1.0"),
    ("train.beta2=-0.5", "train.beta2 must be in [0, 1), got -0.5"),
    ("train.grad_clip=0", "train.grad_clip must be > 0 (the largest gradient norm), got 0"),
])
def test_train_values_out_of_range_are_one_line_naming_the_range(override: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(compose_config(override))
    assert str(err.value) == says


@pytest.mark.parametrize("parallel", [0, -1])
def test_launcher_parallel_below_one_is_refused(parallel: int) -> None:
    from sweep.launcher import SweepLauncher

    with pytest.raises(SubmissionError) as err:
        SweepLauncher("local", {"parallel": parallel}, None, None, None)
    assert str(err.value) == ("hydra.launcher.parallel must be an integer >= 1 (runs at once) or null "
                              f"(one per core), got {parallel}")


def test_a_file_shaped_output_dir_names_the_key(tmp_path) -> None:
    (tmp_path / "f").write_text("")
    assert output_dir_problem(tmp_path / "f", "hydra.sweep.dir") == (
        f"hydra.sweep.dir: {tmp_path / 'f'} is a file, not a directory; choose another hydra.sweep.dir=PATH")
    said = output_dir_problem(tmp_path / "f" / "run", "hydra.run.dir")
    assert said.startswith(f"hydra.run.dir: cannot write {tmp_path / 'f' / 'run'}: ")
    assert said.endswith("choose another hydra.run.dir=PATH")
    assert output_dir_problem(tmp_path / "new" / "run", "hydra.run.dir") is None
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())


def test_an_unwritable_output_dir_names_the_key(tmp_path) -> None:
    if os.geteuid() == 0:  # root writes through file modes: /proc takes no new directory from anyone
        unwritable = Path("/proc/bitlaw-test/run")
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        unwritable = tmp_path / "ro" / "run"
    said = output_dir_problem(unwritable, "hydra.run.dir")
    assert said is not None and said.startswith(f"hydra.run.dir: cannot write {unwritable}: ")
    assert not unwritable.exists()


@pytest.mark.parametrize("run_dir", ["runs/plain", "/tmp/a=b c", "/tmp/it's", "/tmp/x,y", "/tmp/[1]",
                                     "/tmp/back\\", "/tmp/q\"x=1", "/tmp/$HOME", "/tmp/é ü"])
def test_the_resume_command_gives_hydra_the_same_run_dir(run_dir: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sweep.app import resume_command

    command = resume_command(Path(run_dir), ["train.lr=1e-3", "hydra.run.dir=elsewhere", "sweep.name=a b"])
    assert command.startswith("python -m sweep ")
    # the shell's own split of the printed line (not shlex's guess at it), then Hydra's parse of each word
    words = subprocess.run(["bash", "-c", "printf '%s\\0' " + command.removeprefix("python -m sweep ")],
                           capture_output=True, text=True, check=True).stdout.split("\0")[:-1]
    assert words[:2] == ["train.lr=1e-3", "sweep.name=a b"] and len(words) == 3
    override = OverridesParser.create().parse_override(words[-1])
    assert override.key_or_group == "hydra.run.dir" and override.value() == str(Path(run_dir))
    if run_dir == "runs/plain":
        assert command.endswith(" hydra.run.dir=runs/plain")  # quoted only where needed


# --- end to end: one line, exit 2, nothing queued or created -------------------------------------------

FAST = ["model=tiny", "train.tokens=2048", "train.batch_tokens=1024", "train.seq_len=64", "train.threads=1",
        "train.eval_tokens=1024", "logger.wandb.mode=disabled"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def sweep_cmd(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep", *args], cwd=ROOT, env=env or ENV,
                          capture_output=True, text=True, timeout=300)


def one_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: error: ") and "Traceback" not in out.stderr, lines
    return lines[0]


@pytest.mark.integration
def test_a_grid_with_a_bad_token_file_queues_nothing(tmp_path) -> None:
    good, wide = token_file(tmp_path, IDS, np.uint16), token_file(tmp_path, IDS, np.uint32, "wide.bin")
    sweep = tmp_path / "sweep"
    line = one_line(sweep_cmd("-m", *FAST, "data=tokens", f"model.vocab_size={VOCAB}",
                              f"data.path={good},{wide}", f"hydra.sweep.dir={sweep}"))
    assert "set data.dtype=uint32" in line and line.endswith("nothing was submitted")
    assert not (sweep / ".bitlaw" / "jobs.jsonl").exists() and not (sweep / ".bitlaw" / "configs").exists()
    assert not [p for p in sweep.iterdir() if p.is_dir() and p.name != ".bitlaw"]  # no run dirs


@pytest.mark.integration
def test_a_single_run_with_bad_input_stops_before_its_run_dir(tmp_path) -> None:
    run_dir = tmp_path / "run"
    line = one_line(sweep_cmd(*FAST, "data=tokens", f"data.path={token_file(tmp_path, IDS, np.uint16)}",
                              "data.dtype=uint32", f"model.vocab_size={VOCAB}", f"hydra.run.dir={run_dir}"))
    assert line.endswith("set data.dtype=uint16")
    assert not run_dir.exists()
    env = {k: v for k, v in ENV.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(tmp_path / "netrc"), WANDB_CONFIG_DIR=str(tmp_path / "wandb"))
    line = one_line(sweep_cmd(*FAST, "logger.wandb.mode=online", f"hydra.run.dir={run_dir}", env=env))
    assert line == f"sweep: error: {MISSING_KEY}"
    assert not run_dir.exists()


@pytest.mark.integration
def test_file_shaped_output_dirs_are_one_line(tmp_path) -> None:
    (tmp_path / "f").write_text("")
    line = one_line(sweep_cmd(*FAST, f"hydra.run.dir={tmp_path / 'f' / 'run'}"))
    assert line.startswith("sweep: error: hydra.run.dir: cannot write ")
    line = one_line(sweep_cmd("-m", *FAST, "train.lr=1e-3,2e-3", f"hydra.sweep.dir={tmp_path / 'f'}"))
    assert line.startswith("sweep: error: hydra.sweep.dir: ") and "is a file, not a directory" in line
    assert (tmp_path / "f").read_text() == ""
