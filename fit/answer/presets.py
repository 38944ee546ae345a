"""Published law constants, for ``--preset`` where no fit.json exists (1-Bit Wonder; Kumar et al. Table 2).

1-Bit Wonder (blog table) publishes only α, β and γ_w per format, not A, B, E: with those presets the
recommendation ranks bit widths by N_eff, which is exact at fixed D (docs/method.md §7) and prints no loss.
Kumar et al. (Appendix K, Table 2) publish a full integer-weight fit with α = β tied and an exponent offset
n_w: N_eff = N·(1 − exp(−P/γ_w + n_w)), the sign convention of ``fit.law.capacity``; their P is the integer
bit width with per-channel scales, so no block-scale overhead enters the law's P for that preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fit.errors import InputError


@dataclass(frozen=True)
class FormatLaw:
    """The law of one quantization format, as the recommendation needs it."""

    format: str
    params: dict[str, float]  # alpha, beta, gamma (+ A, B, E, offset when known)
    samples: dict[str, np.ndarray] | None = None  # bootstrap refits, aligned by resample
    # The law's P is the stored P_w (1BW, bitlaw fits) or the bare integer bit width (Kumar).
    p_includes_scales: bool = True

    @property
    def has_loss(self) -> bool:
        return all(k in self.params for k in ("A", "B", "E"))

    def law_p(self, bits: int, p_w: float) -> float:
        return p_w if self.p_includes_scales or bits == 16 else float(bits)


@dataclass(frozen=True)
class LawSource:
    """Where the law comes from (a fit.json or a preset) and what its N counts."""

    name: str
    laws: dict[str, FormatLaw]
    n_convention: str = "quant"  # quant | nonembed | total (see fit.answer.memory.Shape.n_for)
    note: str = ""
    p_range: dict[str, tuple[float, float]] = field(default_factory=dict)  # fitted P range per format

    def law(self, fmt: str) -> FormatLaw:
        if fmt in self.laws:
            return self.laws[fmt]
        if "all" in self.laws:
            law = self.laws["all"]
            return FormatLaw(fmt, law.params, law.samples, law.p_includes_scales)
        allowed = ", ".join(self.laws)
        raise InputError(f"--format: {self.name} has no law for format {fmt!r}; allowed: {allowed}")

    @property
    def default_format(self) -> str:
        named = [f for f in self.laws if f not in ("all", "none")]
        return "kmeans" if "kmeans" in named or not named else named[0]


ONE_BIT_WONDER = "1-Bit Wonder (Maskey et al. 2026, arXiv 2602.15563; blog table)"
KUMAR = "Kumar et al. 2024, Scaling Laws for Precision (arXiv 2411.04330), Appendix K Table 2"
UNPUBLISHED = "A, B, E are unpublished: bit widths are ranked by N_eff (exact at fixed D), no loss is printed"

PRESETS: dict[str, LawSource] = {
    "1bw-kmeans": LawSource(
        name="preset 1bw-kmeans",
        laws={"kmeans": FormatLaw("kmeans", {"alpha": 0.63, "beta": 0.40, "gamma": 3.32})},
        note=f"{ONE_BIT_WONDER}, k-means; {UNPUBLISHED}",
    ),
    "1bw-uniform": LawSource(
        name="preset 1bw-uniform",
        laws={"uniform": FormatLaw("uniform", {"alpha": 0.55, "beta": 0.46, "gamma": 3.71})},
        note=f"{ONE_BIT_WONDER}, uniform integer; {UNPUBLISHED}",
    ),
    "kumar-int": LawSource(
        name="preset kumar-int",
        laws={
            "uniform": FormatLaw(
                "uniform",
                {
                    "A": 4.299e3,
                    "B": 1.806e4,
                    "E": 2.7648,
                    "alpha": 0.4965,
                    "beta": 0.4965,
                    "gamma": 2.6745,
                    "offset": 0.3037,
                },
                p_includes_scales=False,
            )
        },
        n_convention="nonembed",
        note=(
            f"{KUMAR}: integer per-channel weights, α = β tied, offset n_w = 0.3037, N = non-embedding "
            "parameters, trained on Dolma (its losses are not comparable with other corpora)"
        ),
    ),
}


def get_preset(name: str) -> LawSource:
    if name not in PRESETS:
        raise InputError(f"--preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]
