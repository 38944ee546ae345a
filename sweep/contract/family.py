"""The CPU ladder: the one rule that gives every size of the demo's model family (the grid's sizes and every
memory-matched contender `bitlaw verify plan --arch ladder` picks), so that no shape is listed by hand.

A size is its width d_model = 32·k. From the width (Llama-3's recipe, the one 1-Bit Wonder's flavours use,
scaled to a 256-token byte vocabulary; docs/method.md §15):
- heads of 16 dimensions: n_heads = d_model / 16, and grouped-query attention with two query heads per
  key/value head (Llama-3's smallest flavour's 2:1): n_kv_heads = n_heads / 2;
- the SwiGLU width of Llama-3's FeedForward, hidden = int(8·d_model/3) rounded up to a multiple of 32
  (multiplier 1.0; 96, 192, 256, 352, 448, 512 for d_model 32 … 192);
- two layers at every size.
Why width and not depth: the learning-rate rule (sweep/recipe.py, lr = 0.128 / d_model) is measured across
widths at two layers; deeper models at that rule lost to the two-layer one at the demo's token budgets
(bf16, d_model 64, 512k tokens: 1.773 at 2 layers, 1.808 at 4, 1.837 at 10). Why steps of 32: quantization
blocks of 32 weights along in_features must divide d_model and the FFN width (1-Bit Wonder's 64 would leave
only d_model 64, 128, 192, …: 4× in N per step at this scale).
Standard library only: sweep/'s config resolvers and fit/'s shape catalogue both import it.
"""

from __future__ import annotations

import math

LADDER_STEP = 32  # width quantum = the ladder's quantization block (experiment=demo's quant.block_size)
HEAD_DIM = 16
QUERY_HEADS_PER_KV = 2
LADDER_LAYERS = 2
LADDER_VOCAB = 256
LADDER_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")


def ladder_ffn_dim(d_model: int) -> int:
    """Llama-3's FeedForward width at multiplier 1.0: int(2·4d/3), rounded up to a multiple of 32."""
    return LADDER_STEP * math.ceil(int(8 * d_model / 3) / LADDER_STEP)


def ladder_shape(d_model: int) -> dict[str, int]:
    """The ladder's model at width ``d_model`` (a positive multiple of 32), as conf/model keys."""
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < LADDER_STEP \
            or d_model % LADDER_STEP:
        raise ValueError(f"model.d_model must be a positive multiple of {LADDER_STEP} on the ladder, "
                         f"got {d_model!r}")
    heads = d_model // HEAD_DIM
    return {"d_model": d_model, "n_layers": LADDER_LAYERS, "n_heads": heads,
            "n_kv_heads": heads // QUERY_HEADS_PER_KV, "ffn_dim": ladder_ffn_dim(d_model),
            "vocab_size": LADDER_VOCAB}


def ladder_name(d_model: int) -> str:
    return f"w{d_model}"


def ladder_widths(max_d_model: int = 1024) -> list[int]:
    """Every width of the ladder up to ``max_d_model``."""
    return list(range(LADDER_STEP, max_d_model + 1, LADDER_STEP))
