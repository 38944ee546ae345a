"""Parsing the user's amounts (memory budgets, token counts, bit widths) and printing them back.

Split from fit.answer.recommend to keep that module about the ranking itself; callers import from here.
"""

from __future__ import annotations

import math
import re

from fit.errors import InputError
from sweep import contract

ALLOWED_BITS = contract.BIT_WIDTHS  # what --bits accepts: every width some format stores
DEFAULT_BITS = (1, 2, 3, 4, 16)
UNITS = {
    "": 1, "b": 1,
    "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
TOKEN_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


# ----------------------------------------------------------------------------- parsing user input


def parse_memory(text: str) -> list[float]:
    """``8GB`` (10^9), ``8GiB`` (2^30), ``7.5e9`` (bytes) or a comma list of those -> bytes, in order."""
    budgets = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", item)
        unit = match.group(2).lower() if match else ""
        if not match or unit not in UNITS:
            raise InputError(
                f"--memory: cannot parse {item.strip()!r}; use bytes or a number with a unit "
                "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 8GB, 8GiB, 7.5e9 or 1GB,2GB,4GB"
            )
        value = float(match.group(1)) * UNITS[unit]
        if not 0 < value < math.inf:  # 1e999GB overflows to inf: no budget, and "inf TB" answers nothing
            raise InputError(f"--memory: {item.strip()!r} must be a positive, finite amount of memory")
        budgets.append(value)
    return budgets


def parse_tokens(text: str) -> float:
    """``1.5e11``, ``150B``, ``2T`` -> tokens."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]?)\s*", text)
    suffix = match.group(2).lower() if match else ""
    if not match or suffix not in TOKEN_SUFFIX or not float(match.group(1)) > 0:
        raise InputError(f"--tokens: cannot parse {text!r}; use a positive number such as 1.5e11, 150B or 2T")
    return float(match.group(1)) * TOKEN_SUFFIX[suffix]


def format_name(text: str) -> str:
    """A quantization format as bitlaw spells it: lower case, no surrounding blanks ('KMeans' -> 'kmeans').
    One rule for the runs table (`bitlaw fit`), fit.json's keys and every --format, so that a name fit
    accepts is one recommend, predict and verify accept too."""
    return str(text).strip().lower()


def parse_bits(text: str) -> list[int]:
    try:
        bits = [int(b) for b in text.split(",")]
    except ValueError:
        bits = []
    if not bits or any(b not in ALLOWED_BITS for b in bits):
        allowed = ", ".join(map(str, ALLOWED_BITS))
        raise InputError(f"--bits: {text!r} is not a comma list of bit widths; allowed: {allowed}")
    return sorted(set(bits))


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def format_count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"
