"""Formats and bit widths, the storage bits per weight (P_w) and the parameter counts by role that the
memory model needs.
"""

from __future__ import annotations

from sweep.contract.states import Vocabulary


class Format(Vocabulary):
    """quant.format: how the block linears' weights are stored (sweep/quant.py implements each)."""

    NONE = "none"         # plain bf16, no QAT
    KMEANS = "kmeans"     # n-bit indices into a per-tensor table of 2^n bf16 centroids, scaled per block
    UNIFORM = "uniform"   # n-bit symmetric integer levels, scaled per block (1 bit: binary)
    BINARY = "binary"     # sign codes, scaled per block (binary_mean: and shifted by a block mean)
    TERNARY = "ternary"   # {-1, 0, 1} codes stored in 2 bits, scaled per block


FORMATS = tuple(Format)
QUANT_FORMATS = tuple(f for f in Format if f is not Format.NONE)
BF16_BITS = 16
CODE_BITS = tuple(range(1, 9))  # the code widths of kmeans and uniform
BITS_BY_FORMAT = {Format.NONE: (BF16_BITS,), Format.KMEANS: CODE_BITS, Format.UNIFORM: CODE_BITS,
                  Format.BINARY: (1,), Format.TERNARY: (2,)}
BIT_WIDTHS = (*CODE_BITS, BF16_BITS)  # every width some format stores


# ----------------------------------------------------------------------------- bits and parameters
SCALE_BITS = 16  # block scales (and binary's block means) are stored as bf16


def bits_per_weight(format: str, bits: int, block_size: int = 64, binary_mean: bool = False,
                    scale_bits: int = SCALE_BITS) -> float:
    """P_w: storage bits per quantized weight = code bits + the bf16 block metadata spread over its block.

    Format `none` (or 16 bits) is plain bf16. Ternary codes {-1, 0, 1} take 2 bits. 1-bit uniform is
    binary; with `binary_mean` binary also stores one block mean. Per-tensor k-means centroid tables (2^n
    values per linear) are not per weight and are left out here (the export counts them).
    """
    if format == Format.NONE or bits == BF16_BITS:
        return float(BF16_BITS)
    if format == Format.TERNARY:
        return 2.0 + scale_bits / block_size
    if format == Format.BINARY or (format == Format.UNIFORM and bits == 1):
        return 1.0 + (2 if binary_mean else 1) * scale_bits / block_size
    return float(bits) + scale_bits / block_size


def param_counts(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, ffn_dim: int,
                 vocab_size: int) -> dict[str, int]:
    """Parameters by role of the Llama-style decoder (no biases, SwiGLU, GQA, untied head), closed form.

    N_quant: the block linears wq, wo (d×d), wk, wv (d×kv·head_dim), w1, w3 (d×ffn), w2 (ffn×d): what QAT
    quantizes. N_hp: token embedding + output head + every RMSNorm weight (kept in bf16).
    """
    roles = parameter_roles(d_model, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size)
    n_quant, n_hp = roles["quant"], roles["embed"] + roles["norm"]
    return {"N_total": n_quant + n_hp, "N_nonembed": n_quant + roles["norm"], "N_quant": n_quant,
            "N_hp": n_hp}


def parameter_roles(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, ffn_dim: int,
                    vocab_size: int) -> dict[str, int]:
    """The three disjoint roles: quant (block linears), embed (token embedding + untied output head) and
    norm (two RMSNorm weights per layer and the final one)."""
    kv_dim = n_kv_heads * (d_model // n_heads)
    return {"quant": n_layers * (2 * d_model * d_model + 2 * d_model * kv_dim + 3 * d_model * ffn_dim),
            "embed": 2 * vocab_size * d_model, "norm": (2 * n_layers + 1) * d_model}
