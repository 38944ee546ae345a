"""Bit accounting and the weight-memory model (docs/method.md §3, §7).

    P_w      = n + scale_bits / block_size          (bf16 = 16)
    M_bytes  = N_quant · P_w / 8  +  N_hp · 2

A ``Shape`` is a Llama-style decoder (no biases, SwiGLU, untied output head, GQA). Its parameters split into
N_quant (every block linear: wq, wk, wv, wo, w1, w2, w3 — what QAT quantizes) and N_hp (token embedding,
output head and RMSNorm weights — kept in bf16). The counts here must equal those of ``sweep.model.Llama``;
tests/test_memory.py checks that on torch-built models, without this module importing torch.

The catalogue of shapes (architecture families, ``--arch``) is fit.answer.shapes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from fit.errors import InputError
from sweep import contract

BF16_BITS = contract.BF16_BITS
ALL_FORMATS = contract.FORMATS  # what --format accepts
SHAPE_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")
LINEARS_PER_LAYER = 7  # wq, wk, wv, wo, w1, w2, w3


@dataclass(frozen=True)
class BitAccounting:
    """How many bits one quantized weight costs in storage."""

    block_size: int = 64  # consecutive weights along in_features sharing one scale
    scale_bits: int = 16  # bf16 scales

    def p_w(self, bits: int, fmt: str = "kmeans") -> float:
        """Average stored bits per quantized weight: index bits + the block scale spread over its block.

        16 bits (or format ``none``) is plain bf16 with no scales. Ternary levels {−1, 0, 1} are stored in
        2 bits. Per-tensor k-means centroid tables are left out here (they are not per weight); they are in
        ``exact_bytes``.
        """
        if bits == BF16_BITS or fmt == "none":
            return float(BF16_BITS)
        check_format(fmt)
        return contract.bits_per_weight(fmt, bits, self.block_size, scale_bits=self.scale_bits)


def check_format(fmt: str) -> str:
    if fmt not in ALL_FORMATS:
        raise InputError(f"--format: unknown format {fmt!r}; allowed: {', '.join(ALL_FORMATS)}")
    return fmt


@dataclass(frozen=True)
class Shape:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int

    def __post_init__(self) -> None:
        for key in SHAPE_KEYS:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"shape {self.name!r}: {key} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise InputError(f"shape {self.name!r}: d_model {self.d_model} not divisible by n_heads")
        if self.n_heads % self.n_kv_heads:
            raise InputError(f"shape {self.name!r}: n_heads {self.n_heads} not divisible by n_kv_heads")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def counts(self) -> dict[str, int]:
        """N_quant, N_hp, N_total, N_nonembed: the contract's closed form (sweep/contract/), the same
        formula the training job records in run.json."""
        return contract.param_counts(self.d_model, self.n_layers, self.n_heads, self.n_kv_heads, self.ffn_dim,
                                     self.vocab_size)

    @property
    def n_embed(self) -> int:
        """Token embedding plus the untied output head."""
        return self._roles()["embed"]

    @property
    def n_norm(self) -> int:
        """RMSNorm weights: two per layer (attention, ffn) and the final one."""
        return self._roles()["norm"]

    def _roles(self) -> dict[str, int]:
        return contract.parameter_roles(self.d_model, self.n_layers, self.n_heads, self.n_kv_heads,
                                        self.ffn_dim, self.vocab_size)

    @property
    def n_quant(self) -> int:
        """Block linears (what QAT quantizes)."""
        return self.counts()["N_quant"]

    @property
    def n_hp(self) -> int:
        """Token embedding, untied output head and RMSNorm weights (kept in bf16)."""
        return self.counts()["N_hp"]

    @property
    def n_total(self) -> int:
        return self.counts()["N_total"]

    @property
    def n_nonembed(self) -> int:
        return self.counts()["N_nonembed"]

    def n_for(self, convention: str) -> int:
        """The count a fit's N means (fit.json's ``columns.N``): quant (default), nonembed or total."""
        return {"quant": self.n_quant, "nonembed": self.n_nonembed, "total": self.n_total}[convention]

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(out_features, in_features) of every quantized linear, in module order."""
        d, kv, f = self.d_model, self.n_kv_heads * self.head_dim, self.ffn_dim
        return [(d, d), (kv, d), (kv, d), (d, d), (f, d), (d, f), (f, d)] * self.n_layers

    def describe(self) -> str:
        return (
            f"{self.name} (d {self.d_model}, {self.n_layers} layers, {self.n_heads}/{self.n_kv_heads} heads, "
            f"ffn {self.ffn_dim})"
        )

    def short(self) -> str:
        dims = f"d {self.d_model} × {self.n_layers} layers"
        return dims if self.name == f"{self.d_model}x{self.n_layers}" else f"{self.name} ({dims})"

    def as_dict(self) -> dict[str, object]:
        counts = {"N_quant": self.n_quant, "N_hp": self.n_hp, "N_total": self.n_total}
        return {**asdict(self), **counts}


def weight_bytes(n_quant: float, n_hp: float, p_w: float) -> float:
    """The memory model M = N_quant·P_w/8 + N_hp·2 (bytes); bf16 overhead for N_hp."""
    return n_quant * p_w / 8 + n_hp * 2


def shape_bytes(shape: Shape, p_w: float) -> float:
    return weight_bytes(shape.n_quant, shape.n_hp, p_w)


def exact_bytes(shape: Shape, bits: int, fmt: str, acct: BitAccounting = BitAccounting()) -> int:
    """Storage of a packed checkpoint, to the byte: packed indices, one scale per (partial) block per row,
    and for k-means one table of 2^n bf16 centroids per quantized linear; N_hp in bf16."""
    hp_bytes = 2 * shape.n_hp
    if bits == BF16_BITS or fmt == "none":
        return 2 * shape.n_quant + hp_bytes
    check_format(fmt)
    index_bits = 2 if fmt == "ternary" else bits
    total_bits = 0
    for out_features, in_features in shape.linear_shapes():
        blocks_per_row = math.ceil(in_features / acct.block_size)
        total_bits += out_features * in_features * index_bits
        total_bits += out_features * blocks_per_row * acct.scale_bits
        if fmt == "kmeans":
            total_bits += (2**bits) * BF16_BITS
    return math.ceil(total_bits / 8) + hp_bytes


def conf_model_dir() -> Path:
    from sweep.contract import conf_dir  # where conf/ is: the one place that knows


    return conf_dir() / "model"
