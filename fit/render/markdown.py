"""The report's Markdown pieces: a number as a table cell, and a table."""

from __future__ import annotations

import math

import numpy as np


def number_cell(x: object, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits; a dash for a missing or non-finite number (a NaN or ±inf
    in a table says nothing a reader can use), anything else as it prints."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}" if isinstance(x, float | int | np.floating) else str(x)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
