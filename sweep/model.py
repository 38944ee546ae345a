"""A Llama-style decoder in one file: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU.

No biases anywhere; the output head is untied from the token embedding. Module names are a contract
(``tok_embeddings``, ``layers.{i}.attention.{wq,wk,wv,wo}``, ``layers.{i}.feed_forward.{w1,w2,w3}``,
``layers.{i}.{attention_norm,ffn_norm}``, ``norm``, ``output``): other code categorises parameters by them.

Building on ``torch.device("meta")`` allocates nothing: the init is skipped for meta tensors and the
rotary tables are computed in ``forward`` rather than stored as buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sweep import contract

# rows of logits at once on CUDA: 4096 × 32000 × 4 B = 0.5 GB fp32 at the cluster's vocab; the preflight's
# memory model (sweep/budget.py) counts the same chunk
from sweep.budget import LOSS_CHUNK_TOKENS


@dataclass
class ModelConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 192
    vocab_size: int = 256
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def param_counts(config: ModelConfig) -> dict[str, int]:
    """Exact parameter counts by role: the contract's closed form (sweep/contract/), which fit/memory
    shares; tests/test_model.py checks it against the module's own parameters."""
    return contract.param_counts(config.d_model, config.n_layers, config.n_heads, config.n_kv_heads,
                                 config.ffn_dim, config.vocab_size)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in fp32 even under bf16 autocast: the mean of squares is the precision-sensitive part
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rotary_tables(seq_len: int, head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """The rotations e^(i·t·θ_j) as real (cos, sin) pairs, shape (seq_len, head_dim/2, 2), for the pairs
    (x[2j], x[2j+1]). Taken from ``torch.polar`` so that both forms of apply_rotary read the same bits."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return torch.view_as_real(torch.polar(torch.ones_like(angles), angles))


def apply_rotary(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, hd) rotated pairwise by `rotations` (rotary_tables). Eager on CPU: one complex multiply
    (~4x faster there than the real form's separate products). Compiled or on a GPU: the real form
    (x_e·cos − x_o·sin, x_e·sin + x_o·cos), which inductor fuses (it generates no code for complex ops).
    The two give the same bits on CPU, forward and backward (tests/test_gpu_path.py)."""
    if x.device.type == "cpu" and not torch.compiler.is_compiling():
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
        return torch.view_as_real(pairs * torch.view_as_complex(rotations)).flatten(-2).type_as(x)
    return apply_rotary_real(x, rotations)


def apply_rotary_real(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    even, odd = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, H, T, hd/2) each
    cos, sin = rotations.unbind(-1)  # (T, hd/2) each
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).type_as(x)


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of H query heads over Hkv key/value heads (each serves H / Hkv query heads).
    Off the CPU, SDPA's ``enable_gqa`` reads the shared heads in place (torch >= 2.5); on CPU the copies of
    ``repeat_interleave`` stay: enable_gqa gives the same forward there but sums k/v gradients in another
    order (~1e-6 apart), and CPU losses are kept bit for bit."""
    repeat = q.shape[1] // k.shape[1]
    if repeat == 1:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if q.device.type != "cpu" and SDPA_HAS_GQA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)  # (B, H, T, hd)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        kv_dim = config.n_kv_heads * config.head_dim
        self.wq = nn.Linear(config.d_model, config.d_model, bias=False)
        self.wk = nn.Linear(config.d_model, kv_dim, bias=False)
        self.wv = nn.Linear(config.d_model, kv_dim, bias=False)
        self.wo = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        q, k = apply_rotary(q, rotations), apply_rotary(k, rotations)
        y = grouped_attention(q, k, v)  # (B, H, T, hd)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, d)


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(config.d_model, config.ffn_dim, bias=False)
        self.w2 = nn.Linear(config.ffn_dim, config.d_model, bias=False)
        self.w3 = nn.Linear(config.d_model, config.ffn_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # SwiGLU


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.feed_forward = FeedForward(config)

    def forward(self, x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rotations)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        check_shapes(config)
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.output = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if self.output.weight.device.type != "meta":
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.config.init_std
        # GPT-2/nanoGPT: residual projections scaled by 1/sqrt(2·n_layers) so the residual stream's
        # variance does not grow with depth.
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, param in self.named_parameters():
            if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                nn.init.normal_(param, mean=0.0, std=residual_std)
            elif param.dim() == 2:
                nn.init.normal_(param, mean=0.0, std=std)
            else:  # RMSNorm gains
                nn.init.ones_(param)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) int64 -> logits (B, T, vocab); with `targets` (B, T), the mean cross-entropy
        instead, by linear_cross_entropy (no whole logits tensor). The loss goes through forward so that
        a DDP wrapper runs it: DDP hooks only what its forward computed."""
        T = tokens.shape[1]
        rotations = rotary_tables(T, self.config.head_dim, self.config.rope_theta, tokens.device)
        x = self.tok_embeddings(tokens)  # (B, T, d)
        for layer in self.layers:
            x = layer(x, rotations)
        hidden = self.norm(x)  # (B, T, d)
        if targets is None:
            return self.output(hidden)  # (B, T, vocab)
        return linear_cross_entropy(hidden.flatten(0, 1), self.output.weight, targets.flatten())


def check_shapes(config: ModelConfig) -> None:
    """Raise ValueError (naming the key) for shapes the model cannot be built with."""
    for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "max_seq_len"):
        if int(getattr(config, key)) <= 0:
            raise ValueError(f"model.{key} must be a positive integer, got {getattr(config, key)!r}")
    if config.d_model % config.n_heads:
        raise ValueError(
            f"model.d_model ({config.d_model}) must be divisible by model.n_heads ({config.n_heads})"
        )
    if config.n_heads % config.n_kv_heads:
        raise ValueError(
            f"model.n_heads ({config.n_heads}) must be divisible by model.n_kv_heads ({config.n_kv_heads})"
        )
    if config.head_dim % 2:
        raise ValueError(f"model.d_model / model.n_heads must be even (rotary pairs), got {config.head_dim}")




def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int = LOSS_CHUNK_TOKENS) -> torch.Tensor:
    """Mean cross-entropy of the logits ``hidden @ weight.T`` (hidden (N, d), weight (vocab, d), targets
    (N,)), `chunk` rows at a time: the fp32 logits, log-softmax and their gradient of a whole micro-batch
    (~15 GB at l1b's 32768 tokens) never exist, only one chunk's; backward recomputes each chunk's logits.
    Under autocast the matmuls run in its dtype, as the head's would (bf16 logits, then fp32 softmax)."""
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk, dtype)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, dtype):  # noqa: ANN001, ANN205 (autograd's signature)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunk, ctx.dtype = chunk, dtype
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)
            total = torch.zeros((), device=hidden.device, dtype=torch.float32)
            for start in range(0, len(hidden), chunk):
                logits = F.linear(hidden[start: start + chunk].to(dtype), w).float()  # (chunk, vocab)
                total += F.cross_entropy(logits, targets[start: start + chunk], reduction="sum")
        return total / len(hidden)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        hidden, weight, targets = ctx.saved_tensors
        chunk, dtype, scale = ctx.chunk, ctx.dtype, grad / len(hidden)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)
            for start in range(0, len(hidden), chunk):
                rows = hidden[start: start + chunk].to(dtype)
                # d(mean CE)/d(logits) = (softmax − one-hot) / N, row by row
                probs = torch.softmax(F.linear(rows, w).float(), dim=-1)
                probs[torch.arange(len(rows), device=probs.device), targets[start: start + chunk]] -= 1
                grad_logits = (probs * scale).to(dtype)
                grad_hidden[start: start + chunk] = (grad_logits @ w).to(hidden.dtype)
                grad_weight += (grad_logits.t() @ rows).float()
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None
