"""What every figure of a study draws from (PlotInputs), its shared styles, and how a figure is saved."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fit.answer.caveats import data_range
from fit.answer.memory import BitAccounting
from fit.answer.presets import LawSource
from fit.fitfile import FitFile

MARKERS = {1: "o", 2: "s", 3: "^", 4: "D", 5: "v", 6: "P", 7: "X", 8: "h", 16: "*"}
LINESTYLES = {1: "-", 2: "--", 3: "-.", 4: ":", 16: (0, (6, 1, 1, 1))}
BITS_COLOURS = {1: "#1b9e77", 2: "#d95f02", 3: "#7570b3", 4: "#e7298a", 5: "#66a61e", 6: "#e6ab02",
                7: "#a6761d", 8: "#666666", 16: "#1f78b4"}  # fmt: skip
PW_TICKS = [1.25, 2.25, 3.25, 4.25, 8.25, 16]


@dataclass
class PlotInputs:
    source: LawSource
    fitfile: FitFile | None = None
    runs: pd.DataFrame | None = None  # canonical columns N, D, loss, P, format (+ bits)
    tokens: float | None = None  # fixed D of the isoloss and recommendation figures
    params_n: float | None = None  # fixed N of the (D, P_w) isoloss panel
    budgets: list[float] = field(default_factory=lambda: [g * 1e9 for g in (1, 2, 4, 8, 16, 32, 64)])
    arch: str = "llama3:continuous"
    bits: tuple[int, ...] = (1, 2, 3, 4, 16)
    acct: BitAccounting = field(default_factory=BitAccounting)
    ranges: dict[str, tuple[float, float]] | None = None  # the N, D, P span of the fit's data, if known

    def __post_init__(self) -> None:
        if self.ranges is None and self.runs is not None:
            self.ranges = {k: (float(self.runs[k].min()), float(self.runs[k].max())) for k in ("N", "D", "P")}
        elif self.ranges is None and self.fitfile is not None:
            self.ranges = data_range(self.fitfile, self.primary)[0]
        # The ranking at fixed D does not depend on D (method.md §7); D only sets the printed losses. Without
        # a choice, use the data's largest D (a default beyond the data would draw an extrapolation as the
        # answer); only a preset, which has no data, takes 1-Bit Wonder's Fig. 1 slice (50B tokens, 3.9B N).
        if self.tokens is None:
            self.tokens = self.ranges["D"][1] if self.ranges else 50e9
        if self.params_n is None:
            self.params_n = self.ranges["N"][1] if self.ranges else 3.9e9

    @property
    def formats(self) -> list[str]:
        named = [f for f in self.source.laws if f not in ("all", "none")]
        return named or list(self.source.laws)

    @property
    def primary(self) -> str:
        """The format the single-format figures use (kmeans when fitted; a fit 'all' serves any format)."""
        return self.source.default_format

    @property
    def quant_formats(self) -> list[str]:
        """Formats to recommend for: every fitted one, with a fit 'all' standing for the primary."""
        return [self.primary if f == "all" else f for f in self.formats]


def save_png(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=130, format="png")  # format given: the staged name does not end in .png
    return path


def bits_of(runs: pd.DataFrame) -> np.ndarray:
    if "bits" in runs:
        return runs["bits"].to_numpy().astype(int)
    return np.where(runs["P"] >= 8, 16, np.floor(runs["P"]).astype(int))


def panel_rows(runs: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """The runs one format's fit saw: its own rows plus the shared bf16 anchors."""
    if fmt == "all" or "format" not in runs:
        return runs
    anchor = runs["format"].isin(["none", "bf16"]) | (runs["P"] >= 8)
    return runs[(runs["format"] == fmt) | anchor]
