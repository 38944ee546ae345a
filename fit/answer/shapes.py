"""The shape catalogue: architecture families (``--arch``) that turn a name into a list of Shapes.

``llama3`` (1-Bit Wonder's flavours), ``ladder`` (the CPU ladder's rule, sweep.contract.family: the demo's
grid and contenders), ``bitlaw`` (the project's conf/model files), a user YAML/JSON file,
and ``NAME:continuous`` (depth and width interpolated between, and extrapolated beyond, the family's shapes).
What a shape costs in bytes is fit.answer.memory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from fit.answer.memory import SHAPE_KEYS, Shape, conf_model_dir, weight_bytes
from fit.errors import InputError
from sweep.contract import ladder_name, ladder_shape, ladder_widths


def llama3_ffn_dim(d_model: int, multiplier: float = 1.3, multiple_of: int = 1024) -> int:
    """The Llama-3 reference FeedForward width rule (meta-llama/llama3 and torchtitan).

    hidden = int(2·4d/3); hidden = int(multiplier·hidden); round up to a multiple of ``multiple_of``.
    Llama-3-8B (d 4096, ×1.3, 1024) gives 14336 and Llama-3-70B (d 8192, ×1.3, 4096) gives 28672.
    """
    hidden = int(2 * 4 * d_model / 3)
    hidden = int(multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


# 1-Bit Wonder's flavours (docs/method.md §7): d_model, n_layers, n_heads, n_kv_heads.
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


def ladder_shapes() -> list[Shape]:
    """The CPU ladder, every width from 32 to 1024: the rule that made the demo's grid
    (sweep.contract.family)."""
    return [Shape(ladder_name(d), **ladder_shape(d)) for d in ladder_widths()]


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
        templated = isinstance(spec, dict) and any(isinstance(spec.get(k), str) for k in SHAPE_KEYS)
        if templated:  # conf/model/ladder.yaml: a rule, not a shape (``--arch ladder`` is its family)
            continue
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
    """``llama3`` | ``ladder`` | ``bitlaw`` | a YAML/JSON file of shapes, each optionally suffixed
    ``:continuous``."""
    base, _, mode = arch.partition(":")
    if mode not in ("", "continuous"):
        raise InputError(f"--arch: unknown mode {mode!r} in {arch!r}; allowed: NAME or NAME:continuous")
    if base == "llama3":
        shapes = llama3_shapes()
    elif base == "ladder":
        shapes = ladder_shapes()
    elif base == "bitlaw":
        shapes = bitlaw_shapes()
    elif Path(base).suffix in (".yaml", ".yml", ".json"):
        if not Path(base).is_file():
            raise InputError(f"--arch: shapes file {base} does not exist")
        shapes = file_shapes(Path(base))
    else:
        raise InputError(
            f"--arch: unknown architecture {base!r}; allowed: llama3, ladder, bitlaw, a .yaml/.json file of "
            "shapes (each optionally with :continuous)"
        )
    if mode == "continuous":
        shapes = continuous_shapes(shapes)
    return sorted(shapes, key=lambda s: (s.n_total, s.n_quant))
