"""What the runs show before any law is fitted: is loss ordered by bits, and which format wins at a width.

Both are counts over (N, D) cells of the runs table — no fit, no model — so a report can set them beside the
fitted law: a law that orders the bit widths the data do not order is a claim of the fit, not of the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

BF16 = 16


@dataclass(frozen=True)
class Ordering:
    """Per format: cells whose loss falls strictly as bits rise (bf16 last), of the cells with every width."""

    format: str
    ordered: int
    cells: int
    adjacent_ordered: int  # adjacent (bits, bits+1) pairs in order, a finer count
    adjacent_pairs: int
    misordered: list[str]  # "N=…, D=…: 3 > 2 bits" for each pair out of order


def _cells(table: pd.DataFrame) -> pd.DataFrame:
    frame = table[["format", "bits", "N", "D", "loss"]].copy()
    frame["bits"] = pd.to_numeric(frame["bits"], errors="coerce").where(frame["format"] != "none", BF16)
    return frame


def bit_ordering(table: pd.DataFrame) -> list[Ordering]:
    """For each quantized format, with the bf16 anchor of the same (N, D) as its top width."""
    frame = _cells(table)
    anchors = frame[frame["format"] == "none"]
    out = []
    for fmt in sorted(f for f in frame["format"].unique() if f != "none"):
        rows = pd.concat([frame[frame["format"] == fmt], anchors])
        wide = rows.pivot_table(index=["N", "D"], columns="bits", values="loss", aggfunc="mean")
        wide = wide.dropna()
        widths = sorted(wide.columns)
        ordered = adjacent = 0
        misordered = []
        for (n, d), losses in wide.iterrows():
            pairs = list(zip(widths, widths[1:], strict=False))
            good = [losses[lo] > losses[hi] for lo, hi in pairs]
            adjacent += sum(good)
            ordered += all(good)
            misordered += [
                f"N={n:.0f}, D={d:.0f}: {hi:g} bits ≥ {lo:g} bits"
                for (lo, hi), ok in zip(pairs, good, strict=True)
                if not ok
            ]
        out.append(
            Ordering(fmt, ordered, len(wide), adjacent, len(wide) * max(0, len(widths) - 1), misordered)
        )
    return out


def format_wins(
    table: pd.DataFrame, first: str = "kmeans", second: str = "uniform"
) -> dict[int, tuple[int, int]]:
    """bits -> (cells where ``first`` has the lower loss, matched cells)."""
    frame = _cells(table)
    out = {}
    a = frame[frame["format"] == first].groupby(["bits", "N", "D"])["loss"].mean()
    b = frame[frame["format"] == second].groupby(["bits", "N", "D"])["loss"].mean()
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
    for bits, group in both.groupby(level="bits"):
        out[int(bits)] = (int((group["a"] < group["b"]).sum()), int(len(group)))
    return out


def render(table: pd.DataFrame) -> str:
    """Markdown lines for the report."""
    lines = []
    for o in bit_ordering(table):
        lines.append(
            f"- {o.format}: loss falls with every added bit (bf16 last) in {o.ordered} of {o.cells} "
            f"(N, D) cells; {o.adjacent_ordered} of {o.adjacent_pairs} adjacent pairs in order"
            + (f" (out of order: {'; '.join(o.misordered)})" if o.misordered else "")
            + "."
        )
    wins = format_wins(table)
    if wins:
        parts = [f"{bits} bits {w}/{n}" for bits, (w, n) in sorted(wins.items())]
        lines.append("- k-means below uniform, cells per width: " + ", ".join(parts) + ".")
    return "\n".join(lines) + ("\n" if lines else "")
