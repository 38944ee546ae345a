"""Bit accounting and the weight-memory model (design §4, §5).

    P_w      = n + scale_bits / block_size          (bf16 = 16)
    M_bytes  = N_quant · P_w / 8  +  N_hp · 2

A ``Shape`` is a Llama-style decoder (no biases, SwiGLU, untied output head, GQA). Its parameters split into
N_quant (every block linear: wq, wk, wv, wo, w1, w2, w3 — what QAT quantizes) and N_hp (token embedding,
output head and RMSNorm weights — kept in bf16). The counts here must equal those of ``sweep.model.Llama``;
tests/test_memory.py checks that on torch-built models, without this module importing torch.

Architecture families turn a name into a list of shapes: ``llama3`` (1-Bit Wonder's flavours), ``bitlaw``
(the project's conf/model ladder), a user YAML/JSON file, and ``NAME:continuous`` (depth and width
interpolated between, and extrapolated beyond, the family's shapes).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from fit.errors import InputError
from sweep import contract

BF16_BITS = 16
QUANT_FORMATS = ("kmeans", "uniform", "binary", "ternary")
ALL_FORMATS = ("none", *QUANT_FORMATS)
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


def llama3_ffn_dim(d_model: int, multiplier: float = 1.3, multiple_of: int = 1024) -> int:
    """The Llama-3 reference FeedForward width rule (meta-llama/llama3 and torchtitan).

    hidden = int(2·4d/3); hidden = int(multiplier·hidden); round up to a multiple of ``multiple_of``.
    Llama-3-8B (d 4096, ×1.3, 1024) gives 14336 and Llama-3-70B (d 8192, ×1.3, 4096) gives 28672.
    """
    hidden = int(2 * 4 * d_model / 3)
    hidden = int(multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


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
        """N_quant, N_hp, N_total, N_nonembed: the contract's closed form (sweep/contract.py), the same
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


# ----------------------------------------------------------------------------- families

# 1-Bit Wonder's flavours (design §5): d_model, n_layers, n_heads, n_kv_heads.
LLAMA3_FLAVOURS = {
    "500M": (1536, 12, 12, 6),
    "1B": (2048, 16, 16, 8),
    "4B": (3072, 24, 24, 8),
    "12B": (4096, 48, 32, 8),
    "31B": (6144, 60, 48, 8),
}
LLAMA3_VOCAB = 128256


def llama3_shapes() -> list[Shape]:
    return [
        Shape(name, d, layers, heads, kv, llama3_ffn_dim(d), LLAMA3_VOCAB)
        for name, (d, layers, heads, kv) in LLAMA3_FLAVOURS.items()
    ]


def conf_model_dir() -> Path:
    from sweep.contract import conf_dir  # where conf/ is: the one place that knows

    return conf_dir() / "model"


def shape_from_mapping(name: str, spec: object, source: str) -> Shape:
    if not isinstance(spec, dict):
        raise InputError(f"{source}: shape {name!r} must be a mapping with keys {', '.join(SHAPE_KEYS)}")
    missing = [k for k in SHAPE_KEYS if k not in spec]
    if missing:
        needs = ", ".join(SHAPE_KEYS)
        raise InputError(f"{source}: shape {name!r} lacks {', '.join(missing)} (needs {needs})")
    return Shape(str(spec.get("name", name)), **{k: spec[k] for k in SHAPE_KEYS})


def bitlaw_shapes(model_dir: Path | None = None) -> list[Shape]:
    """The project's model ladder, read from conf/model/*.yaml at run time (never imported from sweep/)."""
    model_dir = model_dir or conf_model_dir()
    files = sorted(model_dir.glob("*.yaml"))
    if not files:
        raise InputError(f"--arch bitlaw: no model configs in {model_dir}")
    shapes = []
    for path in files:
        spec = yaml.safe_load(path.read_text()) or {}
        if isinstance(spec, dict) and all(k in spec for k in SHAPE_KEYS):
            shapes.append(shape_from_mapping(path.stem, spec, str(path)))
    if not shapes:
        raise InputError(f"--arch bitlaw: no file in {model_dir} has the keys {', '.join(SHAPE_KEYS)}")
    return shapes


def file_shapes(path: Path) -> list[Shape]:
    """A user file of shapes: YAML or JSON, either ``{name: {d_model: …}, …}`` or a list of mappings
    (each with an optional ``name``)."""
    try:
        text = path.read_text()
        spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise InputError(f"--arch: cannot read shapes file {path}: {str(err).splitlines()[0]}") from None
    if isinstance(spec, dict) and "shapes" in spec:
        spec = spec["shapes"]
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, list):
        items = [(f"shape{i}", s) for i, s in enumerate(spec)]
    else:
        raise InputError(f"--arch: {path} must hold a mapping of name -> shape or a list of shapes")
    if not items:
        raise InputError(f"--arch: {path} lists no shapes")
    return [shape_from_mapping(str(name), s, str(path)) for name, s in items]


@dataclass(frozen=True)
class Interpolation:
    """Depth and width as smooth functions of a ladder position t through ``anchors`` (sorted by size):
    anchors sit at t = 0, 1, …; log(width), depth, ffn/width and kv-heads/heads are linear in t between
    them, and the first/last segment's trend continues beyond the ends. A lone anchor grows width by √2
    and depth by √2 per unit of t.
    """

    anchors: tuple[Shape, ...]

    def point(self, t: float) -> tuple[float, float, float, float]:
        """(width, depth, ffn/width, kv/heads) at t, real-valued; depth never below one layer."""
        a = self.anchors
        if len(a) == 1:
            return a[0].d_model * 2 ** (t / 2), max(1.0, a[0].n_layers * 2 ** (t / 2)), *self._ratios(0, 0.0)
        i = min(max(math.floor(t), 0), len(a) - 2)
        w = t - i
        log_d = math.log(a[i].d_model) + w * (math.log(a[i + 1].d_model) - math.log(a[i].d_model))
        depth = a[i].n_layers + w * (a[i + 1].n_layers - a[i].n_layers)
        return math.exp(log_d), max(1.0, depth), *self._ratios(i, min(max(w, 0.0), 1.0))

    def _ratios(self, i: int, w: float) -> tuple[float, float]:
        a, j = self.anchors, min(i + 1, len(self.anchors) - 1)
        ffn = a[i].ffn_dim / a[i].d_model + w * (a[j].ffn_dim / a[j].d_model - a[i].ffn_dim / a[i].d_model)
        kv = a[i].n_kv_heads / a[i].n_heads + w * (
            a[j].n_kv_heads / a[j].n_heads - a[i].n_kv_heads / a[i].n_heads
        )
        return ffn, kv

    def counts(self, t: float) -> tuple[float, float]:
        """(N_quant, N_hp) of the un-rounded shape at t: the smooth family behind the ladder."""
        d, layers, ffn_ratio, kv_ratio = self.point(t)
        vocab = self.anchors[-1].vocab_size
        n_quant = layers * (2 * d * d + 2 * d * d * kv_ratio + 3 * d * d * ffn_ratio)
        return n_quant, 2 * vocab * d + (2 * layers + 1) * d

    def largest_fitting(
        self, budget_bytes: float, p_w: float, t_min: float = -8.0, t_max: float = 40.0
    ) -> float:
        """The largest t in [t_min, t_max] whose weights fit ``budget_bytes`` at ``p_w``; NaN if none does."""
        grid = [t_min + (t_max - t_min) * k / 2000 for k in range(2001)]
        fits = [t for t in grid if weight_bytes(*self.counts(t), p_w) <= budget_bytes]
        if not fits:
            return math.nan
        lo, hi = fits[-1], min(fits[-1] + (t_max - t_min) / 2000, t_max)
        for _ in range(50):  # memory is increasing in t within one grid cell: bisect the boundary
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if weight_bytes(*self.counts(mid), p_w) <= budget_bytes else (lo, mid)
        return lo


def continuous_shapes(anchors: list[Shape], steps: int = 8, max_total: float = 2e12) -> list[Shape]:
    """A dense ladder of buildable shapes along ``Interpolation(anchors)``: ``steps`` rungs per anchor
    interval, from the narrowest buildable width up to ``max_total`` parameters. Width is rounded to whole
    GQA groups of heads (and a multiple of 64, so quantization blocks of 64 divide every linear).

    Why a ladder and not a real-valued N: the recommendation must name a model one can build, and the bf16
    part (vocab·d) depends on the width, not on N alone.
    """
    anchors = sorted(anchors, key=lambda s: s.n_total)
    path = Interpolation(tuple(anchors))
    head_dim, vocab = anchors[-1].head_dim, anchors[-1].vocab_size
    head_unit = 64 // math.gcd(head_dim, 64)

    def build(t: float) -> Shape:
        d_real, layers, ffn_ratio, kv_ratio = path.point(t)
        group = max(1, round(1 / kv_ratio))  # query heads per kv head
        step = group * head_unit // math.gcd(group, head_unit)
        heads = max(step, step * round(d_real / head_dim / step))
        d = heads * head_dim
        ffn = max(64, 64 * round(ffn_ratio * d / 64))
        n_layers = max(1, round(layers))
        return Shape(f"{d}x{n_layers}", d, n_layers, heads, heads // group, ffn, vocab)

    shapes: dict[tuple[int, ...], Shape] = {}
    k = 0
    while True:  # downwards from the first anchor to the narrowest buildable width
        shape = build(-k / steps)
        shapes.setdefault(tuple(getattr(shape, f) for f in SHAPE_KEYS), shape)
        if shape.d_model <= head_dim * head_unit or k > 40 * steps:
            break
        k += 1
    k = 1
    while True:  # upwards through and beyond the last anchor
        shape = build(k / steps)
        shapes.setdefault(tuple(getattr(shape, f) for f in SHAPE_KEYS), shape)
        if shape.n_total > max_total or k > 400 * steps:
            break
        k += 1
    for a in anchors:  # the anchors themselves, exactly as given
        shapes[tuple(getattr(a, f) for f in SHAPE_KEYS)] = a
    return sorted(shapes.values(), key=lambda s: (s.n_total, s.n_quant))


def resolve_arch(arch: str) -> list[Shape]:
    """``llama3`` | ``bitlaw`` | a YAML/JSON file of shapes, each optionally suffixed ``:continuous``."""
    base, _, mode = arch.partition(":")
    if mode not in ("", "continuous"):
        raise InputError(f"--arch: unknown mode {mode!r} in {arch!r}; allowed: NAME or NAME:continuous")
    if base == "llama3":
        shapes = llama3_shapes()
    elif base == "bitlaw":
        shapes = bitlaw_shapes()
    elif Path(base).suffix in (".yaml", ".yml", ".json"):
        if not Path(base).is_file():
            raise InputError(f"--arch: shapes file {base} does not exist")
        shapes = file_shapes(Path(base))
    else:
        raise InputError(
            f"--arch: unknown architecture {base!r}; allowed: llama3, bitlaw, a .yaml/.json file of shapes "
            "(each optionally with :continuous)"
        )
    if mode == "continuous":
        shapes = continuous_shapes(shapes)
    return sorted(shapes, key=lambda s: (s.n_total, s.n_quant))
