"""Training data (docs/method.md §5): the CPython stdlib at byte level, or a user token file.

Batches are a pure function of (seed, step): the sampler has no hidden state, so the data position in a
checkpoint is just the step, resuming is exact, and distributed ranks take disjoint slices of the same
global batch without coordinating.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CORPORA = ("stdlib", "tokens")
TOKEN_DTYPES = ("uint8", "uint16", "uint32")
# Left out of the stdlib corpus: third-party code, and the test suites / IDLE that differ most between
# CPython builds (pyenv ships them, Debian's libpython does not), so the corpus varies less across machines.
EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}


@dataclass
class DataConfig:
    corpus: str = "stdlib"  # stdlib | tokens
    path: str | None = None  # the token file when corpus=tokens
    dtype: str = "uint16"  # token file dtype
    val_fraction: float = 0.05  # stdlib: share of files (by path hash); tokens: tail of the file
    max_bytes: int = 0  # stdlib: cap the corpus (0 = all); tests use a small deterministic prefix


@dataclass
class Corpus:
    train: np.ndarray  # 1-D token ids
    val: np.ndarray
    sha256: str
    description: str


def stdlib_files(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*.py") if not EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_validation_file(relative_path: str, val_fraction: float) -> bool:
    # a hash of the path, not of the position in the list: adding a file never moves another between splits
    digest = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big")
    return digest / 2**64 < val_fraction


def load_stdlib(config: DataConfig) -> Corpus:
    root = Path(sysconfig.get_paths()["stdlib"])
    train_parts, val_parts, total = [], [], 0
    corpus_hash = hashlib.sha256()
    for path in stdlib_files(root):
        data = path.read_bytes()
        if config.max_bytes and total + len(data) > config.max_bytes:
            break
        relative = path.relative_to(root).as_posix()
        corpus_hash.update(relative.encode() + b"\0" + data)
        (val_parts if is_validation_file(relative, config.val_fraction) else train_parts).append(data)
        total += len(data)
    train = np.frombuffer(b"".join(train_parts), dtype=np.uint8)
    val = np.frombuffer(b"".join(val_parts), dtype=np.uint8)
    return Corpus(train, val, corpus_hash.hexdigest(), f"stdlib {root} ({total} bytes)")


def load_token_file(config: DataConfig) -> Corpus:
    path = Path(str(config.path))
    tokens = np.memmap(path, dtype=np.dtype(config.dtype), mode="r")
    n_val = int(len(tokens) * config.val_fraction)
    # hashing a multi-GB file takes minutes: hash its size and 1 MiB from each end and the middle instead
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        for offset in (0, max(0, path.stat().st_size // 2), max(0, path.stat().st_size - 2**20)):
            f.seek(offset)
            digest.update(f.read(2**20))
    return Corpus(tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val:], digest.hexdigest(),
                  f"tokens {path} ({len(tokens)} x {config.dtype})")


def load_corpus(config: DataConfig) -> Corpus:
    return load_stdlib(config) if config.corpus == "stdlib" else load_token_file(config)


def batch_offsets(seed: int, step: int, n_sequences: int, n_tokens: int, seq_len: int) -> np.ndarray:
    """Start offsets of the global batch at `step`: a pure function of (seed, step)."""
    rng = np.random.Generator(np.random.PCG64([seed, step]))
    return rng.integers(0, n_tokens - seq_len - 1, size=n_sequences)


def windows(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    # offsets (B,) -> inputs, targets (B, T): targets are the inputs shifted by one token
    chunk = np.stack([np.asarray(tokens[o: o + seq_len + 1], dtype=np.int64) for o in offsets])
    data = torch.from_numpy(chunk)
    return data[:, :-1], data[:, 1:]


def train_batch(corpus: Corpus, seed: int, step: int, n_sequences: int, seq_len: int,
                rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of the global batch at `step` (rows rank::world_size)."""
    offsets = batch_offsets(seed, step, n_sequences, len(corpus.train), seq_len)
    return windows(corpus.train, offsets[rank::world_size], seq_len)


def validation_windows(corpus: Corpus, n_sequences: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation set: evenly spaced windows over the validation split."""
    if len(corpus.val) < seq_len + 1:
        raise ValueError(f"the validation split has {len(corpus.val)} tokens, fewer than train.seq_len + 1; "
                         "raise data.val_fraction or data.max_bytes")
    n_sequences = max(1, min(n_sequences, (len(corpus.val) - 1) // seq_len))
    offsets = np.linspace(0, len(corpus.val) - seq_len - 1, n_sequences).astype(np.int64)
    return windows(corpus.val, offsets, seq_len)
