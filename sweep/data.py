"""Training data (docs/method.md §5): the CPython stdlib at byte level, or a user token file.

Batches are a pure function of (seed, step): the sampler has no hidden state, so the data position in a
checkpoint is just the step, resuming is exact, and distributed ranks take disjoint slices of the same
global batch without coordinating.
"""

from __future__ import annotations

import functools
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


def token_file_problem(config: DataConfig, seq_len: int) -> str | None:
    """What stops the token file from being read as `data.dtype` into two splits of at least one window
    each (its size only, no read), as one line naming the key to change; None when nothing does."""
    path, itemsize = Path(str(config.path)), np.dtype(config.dtype).itemsize
    if not path.exists():
        return f"data.path: no such file: {path}"
    if not path.is_file():
        return f"data.path: {path} is not a file; point data.path at a flat file of token ids"
    size = path.stat().st_size
    if size == 0:
        return f"data.path: {path} is empty (0 bytes); point data.path at a flat file of token ids"
    if size % itemsize:
        head = (f"data.dtype={config.dtype}: {path} has {size} bytes, not a multiple of {config.dtype}'s "
                f"{itemsize}")
        if itemsize == 4 and size % 2 == 0:  # every size is whole bytes: only uint32 -> uint16 is a real hint
            return f"{head}: it looks like uint16; set data.dtype=uint16"
        return f"{head}; set data.dtype to the dtype the file was written with ({', '.join(TOKEN_DTYPES)})"
    n_tokens = size // itemsize
    n_val = int(n_tokens * config.val_fraction)
    if n_val < seq_len + 1:  # the fixed validation set needs one whole window
        return (f"data.path: {path} holds {n_tokens} {config.dtype} ids, so the validation split "
                f"(data.val_fraction={config.val_fraction}) has {n_val}, fewer than train.seq_len + 1 = "
                f"{seq_len + 1}; use a longer file or raise data.val_fraction")
    if n_tokens - n_val < seq_len + 2:  # batch_offsets draws starts from [0, n - seq_len - 1)
        return (f"data.path: {path} holds {n_tokens} {config.dtype} ids, leaving {n_tokens - n_val} for "
                f"training, fewer than train.seq_len + 2 = {seq_len + 2}; use a longer file or lower "
                "data.val_fraction")
    return None


def token_id_problem(config: DataConfig, vocab_size: int) -> str | None:
    """What makes the file's ids wrong for the model, from one pass over it (cached per path, size, mtime
    and dtype, so a grid's jobs read it once): an id >= model.vocab_size (the embedding's IndexError at run
    time) or a file of the neighbouring dtype, as one line naming the key to change. Call it after
    token_file_problem found nothing."""
    path = Path(str(config.path)).resolve()
    largest = _largest_id(path, config.dtype)
    narrow, wide = _NARROWER.get(config.dtype), _WIDER.get(config.dtype)
    if largest >= vocab_size:
        if narrow is not None and _looks_narrow(path, config.dtype, narrow, vocab_size):
            return (f"data.dtype={config.dtype}: {path} read as {config.dtype} has ids up to {largest}, but "
                    f"read as {narrow} every id is < model.vocab_size ({vocab_size}): it looks like "
                    f"{narrow}; set data.dtype={narrow}")
        return (f"model.vocab_size ({vocab_size}) must exceed every id of data.path {path}: its largest "
                f"{config.dtype} id is {largest}; set model.vocab_size to your tokenizer's size (at least "
                f"{largest + 1}), or check data.path and data.dtype")
    if wide is not None and _looks_wide(path, config.dtype, vocab_size):
        zero = "0" if vocab_size <= 1 << (8 * np.dtype(config.dtype).itemsize) else "0 or 1"
        return (f"data.dtype={config.dtype}: every second {config.dtype} id of {path} is {zero}, as the "
                f"high halves of {wide} ids would be: it looks like {wide}; set data.dtype={wide}")
    return None


_NARROWER = {"uint16": "uint8", "uint32": "uint16"}
_WIDER = {"uint8": "uint16", "uint16": "uint32"}
_SCAN_CHUNK = 1 << 26  # ids per chunk: bounded memory however large the file
_HEAD = 1 << 20  # ids looked at for the dtype pattern


def _largest_id(path: Path, dtype: str) -> int:
    stat = path.stat()
    return _largest_id_cached(str(path), stat.st_size, stat.st_mtime_ns, dtype)


@functools.lru_cache(maxsize=16)
def _largest_id_cached(path: str, size: int, mtime_ns: int, dtype: str) -> int:
    # size and mtime_ns are in the key so that a rewritten file is read again
    # ~10 ms per 100 MB from the page cache: cheap next to one training step of any job
    tokens = np.memmap(path, dtype=np.dtype(dtype), mode="r")
    return max(int(tokens[i: i + _SCAN_CHUNK].max()) for i in range(0, len(tokens), _SCAN_CHUNK))


def _looks_narrow(path: Path, dtype: str, narrow: str, vocab_size: int) -> bool:
    """Whether a file with ids >= vocab_size reads as ids of half the width: a uint16 file read as uint32
    pairs two ids into one (lo + 65536·hi), so most ids are out of range (a real file of this width has a
    few at most), yet read as uint16 all fit, and the narrow dtype can hold the vocabulary at all."""
    if vocab_size > 1 << (8 * np.dtype(narrow).itemsize):
        return False
    head = np.asarray(np.memmap(path, dtype=np.dtype(dtype), mode="r")[:_HEAD])
    return bool((head >= vocab_size).mean() > 0.5) and _largest_id(path, narrow) < vocab_size


def _looks_wide(path: Path, dtype: str, vocab_size: int) -> bool:
    """Whether the file reads as ids of twice the width: a wide id < vocab_size has a high half of at most
    high_bound (0 below 65536 for uint32), so a wide file read narrow has every odd-position id within it,
    which a real token stream does not when the bound is 0 or 1 (at larger bounds nothing is decided)."""
    bits = 8 * np.dtype(dtype).itemsize
    high_bound = (vocab_size - 1) >> bits
    tokens = np.memmap(path, dtype=np.dtype(dtype), mode="r")
    if high_bound > 1 or len(tokens) % 2:
        return False
    head = np.asarray(tokens[:_HEAD])
    return len(head) >= 2 and int(head[1::2].max()) <= high_bound < int(head[0::2].max())


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


def copy_kwargs(device: torch.device) -> dict[str, bool]:
    """How a host batch goes to `device`: on CUDA from pinned (page-locked) memory with ``non_blocking``, so
    the copy is an async DMA queued on the stream instead of a pageable copy that blocks the host until the
    GPU has drained its queue (a sync per batch); elsewhere a plain ``.to`` (a no-op on CPU)."""
    cuda = torch.device(device).type == "cuda"
    return {"pin_memory": cuda, "non_blocking": cuda}


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`batch` on `device` as copy_kwargs says. The pinned staging copy stays alive until the DMA has read
    it: the caching host allocator records the copy's stream event before reusing the block."""
    kwargs = copy_kwargs(device)
    if kwargs["pin_memory"]:
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=kwargs["non_blocking"])
