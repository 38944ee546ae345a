"""Data: deterministic split and batches, rank slices of the global batch, token files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sweep import data
from sweep.data import DataConfig


@pytest.fixture(scope="module")
def corpus() -> data.Corpus:
    return data.load_stdlib(DataConfig(max_bytes=2_000_000))


def test_stdlib_corpus_is_deterministic_and_split_by_file(corpus) -> None:
    again = data.load_stdlib(DataConfig(max_bytes=2_000_000))
    assert again.sha256 == corpus.sha256 and len(corpus.sha256) == 64
    assert np.array_equal(again.train, corpus.train) and np.array_equal(again.val, corpus.val)
    assert 0.01 < len(corpus.val) / (len(corpus.train) + len(corpus.val)) < 0.15
    assert corpus.train.dtype == np.uint8  # bytes: vocab 256


def test_excluded_dirs_are_left_out() -> None:
    import sysconfig
    from pathlib import Path

    root = Path(sysconfig.get_paths()["stdlib"])
    files = data.stdlib_files(root)
    # non-empty, else the check below is vacuous; fewer files than the whole tree: something was left out
    assert 0 < len(files) < sum(1 for _ in root.rglob("*.py")), f"walk of {root}: {len(files)} files"
    parts = {part for path in files for part in path.relative_to(root).parts[:-1]}
    assert not parts & data.EXCLUDED_DIRS


def test_batches_are_a_pure_function_of_seed_and_step(corpus) -> None:
    a = data.train_batch(corpus, seed=1, step=7, n_sequences=8, seq_len=32)
    b = data.train_batch(corpus, seed=1, step=7, n_sequences=8, seq_len=32)
    c = data.train_batch(corpus, seed=1, step=8, n_sequences=8, seq_len=32)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert torch.equal(a[0][:, 1:], a[1][:, :-1])  # targets are inputs shifted by one


def test_rank_slices_partition_the_global_batch(corpus) -> None:
    whole, _ = data.train_batch(corpus, seed=0, step=3, n_sequences=8, seq_len=16)
    parts = [data.train_batch(corpus, 0, 3, 8, 16, rank=r, world_size=2)[0] for r in range(2)]
    assert torch.equal(torch.cat([parts[0], parts[1]]).sort(0).values, whole.sort(0).values)
    assert torch.equal(parts[0], whole[0::2])


def test_validation_windows_are_fixed(corpus) -> None:
    x1, _ = data.validation_windows(corpus, 16, 64)
    x2, _ = data.validation_windows(corpus, 16, 64)
    assert x1.shape == (16, 64) and torch.equal(x1, x2)


def test_token_file(tmp_path) -> None:
    tokens = (np.arange(100_000) % 5000).astype(np.uint16)
    path = tmp_path / "tokens.bin"
    tokens.tofile(path)
    config = DataConfig(corpus="tokens", path=str(path), dtype="uint16", val_fraction=0.1)
    corpus = data.load_token_file(config)
    assert len(corpus.val) == 10_000 and corpus.train[123] == 123
    x, _ = data.train_batch(corpus, seed=0, step=0, n_sequences=4, seq_len=32)
    assert x.dtype == torch.int64 and int(x.max()) < 5000

