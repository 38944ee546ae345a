"""Weight quantizers for QAT (docs/method.md §4): k-means codebooks, uniform int grids, binary, ternary.

Every quantizer works on blocks of ``block_size`` consecutive weights along ``in_features`` and stores one
bf16 scale per block. ``encode`` turns a weight matrix into unsigned n-bit codes plus bf16 block metadata,
``decode`` turns them back; the fake-quantized weight used in training is exactly ``decode(encode(w))``, so
what the export packs is what the model was trained with.

Formats (``quant.format``):
- ``none``     no quantization (the 16-bit anchor; P_w = 16).
- ``kmeans``   one codebook of 2^n centroids per tensor, Lloyd-Max on the block-normalised weights w / s.
- ``uniform``  symmetric int grid {-(2^(n-1)-1) … 2^(n-1)-1}·s; at n = 2 this is ternary, at n = 1 the grid
               would be {0}, so 1-bit uniform uses the binary quantizer.
- ``binary``   sign(w)·absmean_block (one bf16 scale per block, P_w = 1.25); with ``binary_mean`` the
               block mean is removed first and stored too: sign(w - m)·absmean(w - m) + m (P_w = 1.5).
- ``ternary``  {-1, 0, 1}·absmean_block, stored as 2-bit codes.
The gradient is a pure straight-through estimator: ``w + (q(w) - w).detach()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sweep import contract

SCALES = ("auto", "absmax", "absmean")
SCALE_BITS = contract.SCALE_BITS  # block scales (and binary means) are stored as bf16
KMEANS_INIT_SAMPLES = 2**20
BLOCK_LINEARS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


@dataclass
class QuantConfig:
    format: str = "none"
    bits: int = 16
    block_size: int = 64
    scale: str = "auto"  # auto = absmax above 2 bits, absmean at <= 2 bits
    qat_start: float = 0.25  # < 1: fraction of the run's steps; >= 1: a step count
    refresh_every: int = 0  # re-fit k-means codebooks every K steps after the switch (0 = never)
    kmeans_tol: float = 1e-4  # stop Lloyd when at most this fraction of assignments changes
    kmeans_max_iter: int = 100
    binary_mean: bool = False  # binary: shift by the bf16 block mean (one more bf16 value per block)


def quantizer_kind(format: str, bits: int) -> str:
    """The quantizer that implements (format, bits): 1-bit uniform is binary."""
    if format == "uniform" and bits == 1:
        return "binary"
    return format


def scale_mode(config: QuantConfig) -> str:
    if config.scale != "auto":
        return config.scale
    # absmax at <= 2 bits flushes most weights of a Gaussian block to zero; absmean keeps them
    return "absmax" if config.bits > 2 else "absmean"


def bits_per_weight(format: str, bits: int, block_size: int = 64, binary_mean: bool = False) -> float:
    """P_w of (format, bits): the contract's rule (sweep/contract/), shared with fit/memory."""
    return contract.bits_per_weight(format, bits, block_size, binary_mean, SCALE_BITS)


def to_bf16_precision(x: torch.Tensor) -> torch.Tensor:
    """Round to bf16 as stored, compute in the original dtype."""
    return x.to(torch.bfloat16).to(x.dtype)


def block_scales(w: torch.Tensor, block_size: int, mode: str) -> torch.Tensor:
    # w: (out, in) -> scales (out, in/B, 1), bf16-rounded
    blocks = w.unflatten(-1, (-1, block_size)).abs()  # (out, in/B, B)
    s = blocks.amax(-1, keepdim=True) if mode == "absmax" else blocks.mean(-1, keepdim=True)
    # an all-zero block would divide by zero; any positive scale reproduces it exactly
    return to_bf16_precision(s.clamp_min(1e-8))


@dataclass
class Encoded:
    codes: torch.Tensor  # (out, in) int64, values in [0, 2^bits)
    scales: torch.Tensor  # (out, in/B, 1), bf16 values
    means: torch.Tensor | None = None  # (out, in/B, 1), binary only
    centroids: torch.Tensor | None = None  # (2^bits,), kmeans only


def encode(w: torch.Tensor, kind: str, bits: int, block_size: int, mode: str,
           centroids: torch.Tensor | None = None, binary_mean: bool = False) -> Encoded:
    w = w.detach()
    if kind == "binary":
        blocks = w.unflatten(-1, (-1, block_size))  # (out, in/B, B)
        means = to_bf16_precision(blocks.mean(-1, keepdim=True)) if binary_mean else None
        centred = blocks - means if binary_mean else blocks
        scales = to_bf16_precision(centred.abs().mean(-1, keepdim=True).clamp_min(1e-8))
        return Encoded((centred >= 0).long().flatten(-2), scales, means=means)
    scales = block_scales(w, block_size, mode)
    normalised = w.unflatten(-1, (-1, block_size)) / scales  # (out, in/B, B)
    if kind == "kmeans":
        assert centroids is not None, "k-means codes need fitted centroids"
        codes = nearest_centroid(normalised, midpoints(centroids))
        return Encoded(codes.flatten(-2), scales, centroids=centroids)
    levels = 1 if kind == "ternary" else 2 ** (bits - 1) - 1  # symmetric grid -levels..levels
    codes = torch.clamp(torch.round(normalised * levels), -levels, levels) + levels
    return Encoded(codes.long().flatten(-2), scales)


def decode(enc: Encoded, kind: str, bits: int, block_size: int) -> torch.Tensor:
    codes = enc.codes.unflatten(-1, (-1, block_size))  # (out, in/B, B)
    if kind == "binary":
        values = (2 * codes - 1).to(enc.scales.dtype) * enc.scales
        if enc.means is not None:
            values = values + enc.means
    elif kind == "kmeans":
        values = enc.centroids[codes] * enc.scales
    else:
        levels = 1 if kind == "ternary" else 2 ** (bits - 1) - 1
        values = (codes - levels).to(enc.scales.dtype) * (enc.scales / levels)
    return values.flatten(-2)


def midpoints(sorted_centroids: torch.Tensor) -> torch.Tensor:
    return (sorted_centroids[1:] + sorted_centroids[:-1]) / 2


def nearest_centroid(x: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted centroids whose midpoints are `mids`: the number of midpoints
    strictly below x (ties go to the lower centroid), one ``bucketize`` pass whatever the width. The
    midpoints stay a device tensor: reading them as Python floats would be a host-device sync."""
    return torch.bucketize(x, mids)


def fake_quantize(w: torch.Tensor, kind: str, bits: int, block_size: int, mode: str,
                  centroids: torch.Tensor | None = None, binary_mean: bool = False) -> torch.Tensor:
    """The fake-quantized weight ``decode(encode(w))``: the per-tensor reference that the batched update
    (sweep/quant_batch.py) and its fused kernels (sweep/quant_kernels.py) equal bit for bit. No host sync."""
    return decode(encode(w, kind, bits, block_size, mode, centroids, binary_mean), kind, bits, block_size)


def kmeans_plus_plus(sample: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding in 1-D: each next centre drawn with probability ∝ squared distance."""
    first = torch.randint(len(sample), (1,), generator=generator)
    centres = [sample[first]]
    dist2 = (sample - centres[0]) ** 2
    for _ in range(1, k):
        cumulative = torch.cumsum(dist2.double(), 0)
        if float(cumulative[-1]) == 0.0:  # fewer distinct values than k: reuse a point (stays empty)
            pick = torch.randint(len(sample), (1,), generator=generator)
        else:  # inverse-CDF draw: O(n), where torch.multinomial over 2^20 weights is ~10x slower
            u = torch.rand(1, generator=generator, dtype=torch.float64) * cumulative[-1]
            pick = torch.searchsorted(cumulative, u).clamp_max(len(sample) - 1)
        centres.append(sample[pick])
        dist2 = torch.minimum(dist2, (sample - sample[pick]) ** 2)
    return torch.sort(torch.cat(centres)).values


def fit_centroids(x: torch.Tensor, k: int, seed: int, tol: float = 1e-4, max_iter: int = 100) -> torch.Tensor:
    """Lloyd-Max on 1-D data: returns k sorted centroids minimising the squared error of nearest rounding.

    In 1-D the clusters of sorted centroids are contiguous ranges of the sorted data, so after one sort
    each Lloyd iteration is a ``searchsorted`` of the k-1 midpoints plus prefix-sum differences: O(k log n)
    instead of O(n) per iteration, with the same result as assigning every point. The number of points
    that changed cluster is the total movement of the range boundaries. Prefix sums are float64 so
    million-element tensors keep the centroid's low bits.
    """
    x = x.detach().flatten().float()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if len(x) > KMEANS_INIT_SAMPLES:
        sample = x[torch.randperm(len(x), generator=generator)[:KMEANS_INIT_SAMPLES].to(x.device)]
    else:
        sample = x
    centroids = kmeans_plus_plus(sample.cpu(), k, generator).to(x.device).double()
    xs = torch.sort(x.double()).values  # (n,)
    prefix = torch.cat([xs.new_zeros(1), xs.cumsum(0)])  # (n+1,)
    n = len(xs)

    def boundaries(c: torch.Tensor) -> torch.Tensor:
        # cluster j holds xs[bounds[j]:bounds[j+1]]; ties at a midpoint go to the lower cluster (bucketize)
        edges = torch.searchsorted(xs, midpoints(c), right=True)
        return torch.cat([edges.new_zeros(1), edges, edges.new_full((1,), n)])  # (k+1,)

    bounds = boundaries(centroids)
    for _ in range(max_iter):
        counts = bounds[1:] - bounds[:-1]
        sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
        # an empty cluster keeps its old centre rather than collapsing to 0
        centroids = torch.sort(torch.where(counts > 0, sums / counts.clamp_min(1), centroids)).values
        new_bounds = boundaries(centroids)
        changed = int((new_bounds - bounds).abs().sum())
        bounds = new_bounds
        if changed <= tol * n:
            break
    return centroids.float()


class QuantLinear(nn.Linear):
    """An ``nn.Linear`` whose weight is fake-quantized in forward once it is switched on.

    The latent weight keeps its name (``.weight``) so state dicts and parameter names match the plain model.
    ``active`` and ``centroids`` are buffers: they travel with the checkpoint. ``enabled`` mirrors ``active``
    as a Python bool, because reading a CUDA tensor in forward is a host-device sync on every call (and a
    graph break under torch.compile); the two are set together and ``enabled`` is re-read on load.

    Quantize once per optimizer step: ``q(w) - w`` is kept in the non-persistent buffer ``ste_delta`` and
    recomputed only when the weight (or codebook) changed, as told by the tensors' version counters, which
    every in-place update (optimizer step, ``load_state_dict``, ``copy_``) bumps. All micro-batches of a
    step, and every evaluation batch, reuse it: forward is ``F.linear(x, w + delta)``, the straight-through
    ``w + (q(w) - w).detach()`` with its subtraction done once per step, so the values are unchanged bit for
    bit and the add hands the gradient to ``w`` as is. Why an add per micro-batch rather than a custom
    autograd Function returning a cached ``w + delta``: the Function's Python forward and backward cost
    ~50 µs per linear per micro-batch on CPU (+6 % of the r49k step), the add a few µs; on a GPU it is one
    elementwise pass over the weight, which autocast's bf16 cast of the weight makes anyway.
    """

    def __init__(self, in_features: int, out_features: int, config: QuantConfig,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        self.kind = quantizer_kind(config.format, config.bits)
        self.bits, self.block_size, self.scale_mode = config.bits, config.block_size, scale_mode(config)
        self.binary_mean = config.binary_mean
        self.register_buffer("active", torch.zeros((), dtype=torch.bool, device=device))
        self.enabled = False
        n_centroids = 2**config.bits if self.kind == "kmeans" else 0
        self.register_buffer("centroids", torch.zeros(n_centroids, device=device))
        self.register_buffer("ste_delta", torch.zeros(0, device=device, dtype=dtype), persistent=False)
        self._delta_key: tuple | None = None
        self.chunk_cache: object | None = None  # sweep.quant_batch.ChunkCache of the chunk this module leads

    def encode(self) -> Encoded:
        return encode(self.weight, self.kind, self.bits, self.block_size, self.scale_mode, self.centroids,
                      self.binary_mean)

    def quantized_weight(self) -> torch.Tensor:
        return decode(self.encode(), self.kind, self.bits, self.block_size)

    def set_enabled(self, on: bool) -> None:
        self.active.fill_(on)
        self.enabled = on
        self._delta_key = None

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        if prefix + "active" in state_dict:  # one read at load time, never in forward
            self.enabled = bool(state_dict[prefix + "active"])
        self._delta_key = None

    def _version_key(self) -> tuple:
        # read from the dicts directly: nn.Module.__getattr__ costs ~1 µs a call, and this runs for every
        # quantized module at every step. Version counters and addresses are host-side: no device sync.
        w, c = self._parameters["weight"], self._buffers["centroids"]
        return (w._version, w.data_ptr(), c._version, c.data_ptr(), w.dtype)

    @torch.no_grad()
    def update_quantized(self) -> None:
        """Recompute ``ste_delta = q(w) - w`` if the latent weight or the codebook changed since."""
        if not self.enabled or self._delta_key == self._version_key():
            return
        w = self.weight
        self.store_delta(fake_quantize(w, self.kind, self.bits, self.block_size, self.scale_mode,
                                       self.centroids, self.binary_mean) - w)

    @torch.no_grad()
    def store_delta(self, delta: torch.Tensor, key: tuple | None = None) -> None:
        """``ste_delta = delta`` (q(w) − w, shaped like w), and mark it current (`key`: as mark_current)."""
        w, buf = self.weight, self.ste_delta
        if buf.shape == w.shape and buf.dtype == w.dtype and buf.device == w.device:
            buf.copy_(delta)  # in place: a compiled graph holds this buffer as an input
        else:
            self.ste_delta = delta.to(dtype=w.dtype, device=w.device, copy=True)
        self.mark_current(key)

    def mark_current(self, key: tuple | None = None) -> None:
        """``ste_delta`` now holds q(w) − w of the current weight and codebook (whoever wrote it); `key`:
        ``_version_key()`` as read by the caller after the weight last changed."""
        # object.__setattr__: nn.Module.__setattr__ checks parameters, buffers and submodules first (~3 µs),
        # and this runs for every quantized module at every step
        object.__setattr__(self, "_delta_key", key if key is not None else self._version_key())

    def ste_weight(self) -> torch.Tensor:
        """The weight forward uses once switched on: ``w + (q(w) - w)``, gradient straight to ``w``."""
        return self.weight + self.ste_delta

    @torch.no_grad()
    def fit_codebook(self, seed: int, tol: float, max_iter: int) -> None:
        if self.kind != "kmeans":
            return
        normalised = self.weight.unflatten(-1, (-1, self.block_size)) / block_scales(
            self.weight, self.block_size, self.scale_mode)
        # stored as bf16 in the export, so train with the bf16 values: the export is then exact
        centroids = to_bf16_precision(fit_centroids(normalised, 2**self.bits, seed, tol, max_iter))
        self.centroids.copy_(torch.sort(centroids).values)
        self._delta_key = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return F.linear(x, self.weight)
        if not torch.compiler.is_compiling() and self._delta_key != self._version_key():
            # eager: quantize here only if the weight changed since quant_batch.update() (the key check is
            # ~1 µs; entering update_quantized's no_grad ~3 µs per linear per micro-batch); compiled code
            # relies on update(), which the loop calls before each step and evaluation, since the graph
            # cannot keep Python-side state
            self.update_quantized()
        return F.linear(x, self.ste_weight())


def is_block_linear(name: str) -> bool:
    """Linears inside the transformer blocks: attention q/k/v/o and the SwiGLU w1/w2/w3."""
    return name.startswith("layers.") and name.rsplit(".", 1)[-1] in BLOCK_LINEARS


def prepare(model: nn.Module, config: QuantConfig) -> list[tuple[str, QuantLinear]]:
    """Swap every block linear for a QuantLinear (embedding, head and norms stay as they are).

    Returns the swapped modules by name; with format ``none`` nothing is swapped.
    """
    if quantizer_kind(config.format, config.bits) == "none":
        return []
    swapped = []
    for name, module in list(model.named_modules()):
        if not (isinstance(module, nn.Linear) and is_block_linear(name)):
            continue
        if module.in_features % config.block_size:
            raise ValueError(f"quant.block_size ({config.block_size}) must divide in_features "
                             f"({module.in_features}) of {name}")
        quant = QuantLinear(module.in_features, module.out_features, config,
                            device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            quant.weight.copy_(module.weight)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, quant)
        swapped.append((name, quant))
    return swapped


@torch.no_grad()
def switch_on(quantized: list[tuple[str, QuantLinear]], config: QuantConfig, seed: int) -> None:
    """The QAT switch: fit each tensor's codebook from its current weights, then quantize in forward."""
    for index, (_, module) in enumerate(quantized):
        module.fit_codebook(seed + index, config.kmeans_tol, config.kmeans_max_iter)
        module.set_enabled(True)


@torch.no_grad()
def refresh(quantized: list[tuple[str, QuantLinear]], config: QuantConfig, seed: int) -> None:
    for index, (_, module) in enumerate(quantized):
        module.fit_codebook(seed + index, config.kmeans_tol, config.kmeans_max_iter)

