"""Reading a fit's input table: CSV, JSONL or Parquet, ``--columns`` mapping, ``--where``, validation.

The result always has the canonical columns ``N, D, loss`` (and ``P, format, run`` when present); the user's
own names are recorded so fit.json can say where each came from.  Nothing is dropped silently: a bad row is a
one-line :class:`InputError` naming the column and the row count, or, with ``--drop-invalid``, a counted drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fit.data.sniff import check_csv_header, jsonl_error
from fit.data.where import filter_rows
from fit.errors import InputError
from fit.units import format_name
from sweep import contract

CANONICAL = ("N", "D", "loss", "P", "format", "run")
NUMERIC = ("N", "D", "loss", "P")
# A loss this small is a logging or unit error (an LM's loss in nats is ~1), and on log loss one such row
# (log 1e-300 = -691) outweighs all the others: the fit moved without a word.  Denormal and zero are below it.
MIN_LOSS = 1e-6
P_TOLERANCE = 1e-6  # P_w values are n + 16/block, exact in binary for power-of-two blocks
N_CONVENTIONS = {"quant": "N_quant", "nonembed": "N_nonembed", "total": "N_total"}
READERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass
class Table:
    frame: pd.DataFrame  # canonical columns + every other column of the input, original row order
    columns: dict[str, str]  # canonical name -> source column
    n_rows_read: int
    n_rows_where: int  # after --where
    dropped: dict[str, int] = field(default_factory=dict)  # "column: reason" -> rows dropped
    where: str | None = None
    drop_early: float = 0.0  # --drop-early F: each run's rows below F x its largest D were dropped
    n_dropped_early: int = 0


def parse_columns(spec: str | None) -> dict[str, str]:
    """``"N=Model Size,D=tokens"`` -> {"N": "Model Size", "D": "tokens"}."""
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key in mapping:  # "loss=loss,loss=N" kept the last: a fit of N as the loss, exit 0
            raise InputError(f"--columns: {key!r} is mapped twice; map each name once")
        if not sep or not key or not value:
            raise InputError(
                f"--columns: {item!r} is not NAME=COLUMN; e.g. --columns N=params,D=tokens,loss=val"
            )
        if key not in CANONICAL:
            raise InputError(f"--columns: unknown name {key!r}; allowed: {', '.join(CANONICAL)}")
        mapping[key] = value
    return mapping


def read_frame(path: str | Path) -> pd.DataFrame:
    """Load CSV/TSV, JSONL or Parquet by suffix; every failure is one InputError line."""
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"DATA {path}: unknown file type {path.suffix!r}; allowed: {', '.join(READERS)}")
    if not path.is_file():
        raise InputError(f"DATA {path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"DATA {path}: the file is empty (0 rows)")
    try:
        if kind == "csv":
            frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        elif kind == "jsonl":
            frame = pd.read_json(path, lines=True)
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"DATA {path}: the file is empty (0 rows)") from None
    except (ValueError, pd.errors.ParserError, OSError) as err:
        if kind == "jsonl" and (bad_line := jsonl_error(path)) is not None:
            raise bad_line from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"DATA {path}: cannot read it as {kind} ({first})") from None
    if kind == "csv":
        check_csv_header(path, frame, "\t" if path.suffix.lower() == ".tsv" else ",")
    if frame.empty:
        raise InputError(f"DATA {path}: the file has a header but 0 rows")
    return frame


def _bad_numeric(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Coerce to float; also return a mask of entries that were present but not numbers."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    not_numeric = (numbers.isna() & values.notna()).to_numpy()
    return numbers, not_numeric


def load_table(
    path: str | Path,
    columns: dict[str, str] | None = None,
    where: str | None = None,
    require: tuple[str, ...] = ("N", "D", "loss"),
    drop_invalid: bool = False,
    n_convention: str | None = None,
    drop_early: float = 0.0,
) -> Table:
    """Read, filter, map and validate ``path``; see :func:`prepare_table`."""
    return prepare_table(read_frame(path), columns, where, require, drop_invalid, n_convention, drop_early)


def prepare_table(
    frame: pd.DataFrame,
    columns: dict[str, str] | None = None,
    where: str | None = None,
    require: tuple[str, ...] = ("N", "D", "loss"),
    drop_invalid: bool = False,
    n_convention: str | None = None,
    drop_early: float = 0.0,
) -> Table:
    """Apply ``--where`` (on the input's own column names), map to canonical names, validate.

    ``require`` lists canonical columns that must exist (add "P" for the precision law, "format" for
    ``--by format``).  ``n_convention`` (quant|nonembed|total) picks N from ``N_quant``/``N_nonembed``/
    ``N_total`` unless ``--columns N=`` names a column explicitly.  A run may have several rows (checkpoints,
    the same run at several D); ``drop_early`` F > 0 drops each run's rows below F x that run's largest D,
    after --where and --drop-invalid.
    """
    check_drop_early(drop_early)
    mapping = column_mapping(columns, n_convention)
    n_read = len(frame)
    frame = apply_where(frame, where)
    n_where = len(frame)
    check_required(frame, mapping, require)
    out, present = with_canonical_columns(frame, mapping)
    out, dropped = checked_numbers(out, present, require, mapping, drop_invalid)
    for name in ("format", "run"):
        if name in present:
            out[name] = out[name].astype(str)
    if "format" in present:  # one spelling everywhere: 'KMeans' fits as, and is recommended as, 'kmeans'
        out["format"] = out["format"].map(format_name)
    if "P" in present and "P" in require:
        check_p_matches_bits(out, mapping)
    if "run" in present:
        check_unique_run_points(out, mapping)
    n_early = 0
    if drop_early > 0:
        out, n_early = drop_early_rows(out, drop_early, "run" in present)
    check_distinct_n_and_d(out, mapping)
    columns_used = {name: mapping[name] for name in present}
    out = out.reset_index(drop=True)
    return Table(out, columns_used, n_read, n_where, dropped, where, drop_early, n_early)


def column_mapping(columns: dict[str, str] | None, n_convention: str | None) -> dict[str, str]:
    """{canonical name: the input's column}: the canonical names themselves, N per ``n_convention``, then
    ``--columns``."""
    mapping = {name: name for name in CANONICAL}
    if n_convention is not None:
        if n_convention not in N_CONVENTIONS:
            raise InputError(
                f"--n-convention: {n_convention!r} is not allowed; allowed: {', '.join(N_CONVENTIONS)}"
            )
        mapping["N"] = N_CONVENTIONS[n_convention]
    mapping.update(columns or {})
    return mapping


def apply_where(frame: pd.DataFrame, where: str | None, label: str = "--where") -> pd.DataFrame:
    """The rows ``--where`` keeps (all without one); a bad expression or no row kept is an InputError.

    The filter is parsed by fit.data.where's grammar, never evaluated: fit.json stores it and report, plot
    and predict re-apply it, so a shared fit.json must not be able to run code."""
    if not where:
        return frame
    n_read = len(frame)
    frame = filter_rows(frame, where, label)
    if frame.empty:
        raise InputError(f"{label} {where!r} kept 0 of {n_read} rows")
    return frame


def check_required(frame: pd.DataFrame, mapping: dict[str, str], require: tuple[str, ...]) -> None:
    for name in require:
        if mapping[name] not in frame.columns:
            shown = ", ".join(map(str, list(frame.columns)[:12])) + (", ..." if frame.shape[1] > 12 else "")
            raise InputError(
                f"{column_label(name, mapping)} not found; map it with --columns {name}=COLUMN "
                f"(have: {shown})"
            )


def with_canonical_columns(frame: pd.DataFrame, mapping: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """(a copy with the canonical columns added, the canonical names the input has)."""
    present = [name for name in CANONICAL if mapping[name] in frame.columns]
    out = frame.copy()  # keep every input column (config columns feed --where and the report)
    for name in present:
        out[name] = frame[mapping[name]].to_numpy()
    return out, present


def column_label(name: str, mapping: dict[str, str]) -> str:
    """How an error names a canonical column: with the input's own name when it was mapped."""
    src = mapping[name]
    return f"column {name!r}" if src == name else f"column {name!r} (from {src!r})"


def checked_numbers(
    out: pd.DataFrame,
    present: list[str],
    require: tuple[str, ...],
    mapping: dict[str, str],
    drop_invalid: bool,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The required numeric columns as numbers, each positive and finite: a bad row is an InputError, or with
    ``drop_invalid`` a counted drop ({"column: reason": rows})."""
    bad_rows = np.zeros(len(out), dtype=bool)
    dropped: dict[str, int] = {}
    for name in NUMERIC:
        if name not in present or name not in require:
            continue  # e.g. a P column with gaps does not block a Chinchilla fit that ignores P
        numbers, not_numeric = _bad_numeric(out[name])
        values = numbers.to_numpy()
        checks = [
            ("not numeric", not_numeric),
            ("missing, NaN or inf", ~np.isfinite(values) & ~not_numeric),
            ("not positive", np.isfinite(values) & (values <= 0)),
        ]
        if name == "loss":
            tiny = (values > 0) & (values < MIN_LOSS)
            checks.append((f"below {MIN_LOSS:g}, the smallest loss allowed", tiny))
        for reason, mask in checks:
            count = int(mask.sum())
            if not count:
                continue
            if not drop_invalid:
                first = int(np.flatnonzero(mask)[0])
                raise InputError(
                    f"{column_label(name, mapping)}: {count} of {len(out)} rows are {reason} "
                    f"(first: data row {first + 1}); fix them or pass --drop-invalid"
                )
            dropped[f"{name}: {reason}"] = count
            bad_rows |= mask
        out[name] = values
    if bad_rows.any():
        out = out.loc[~bad_rows]
        if out.empty:
            raise InputError(f"--drop-invalid dropped all {len(bad_rows)} rows; nothing left to fit")
    return out, dropped


def check_distinct_n_and_d(out: pd.DataFrame, mapping: dict[str, str]) -> None:
    for name in ("N", "D"):
        distinct = out[name].nunique()
        if distinct < 3:
            raise InputError(
                f"{column_label(name, mapping)}: only {distinct} distinct value(s) in {len(out)} rows; "
                "a law needs at least 3"
            )


def check_unique_run_points(frame: pd.DataFrame, mapping: dict[str, str]) -> None:
    """Several rows per run are a normal table (a run's checkpoints, one run at several D: the bootstrap
    resamples the run as one unit).  A run at the same D twice (with its format and bits, where the table has
    them) is a sweep gathered twice or a doubled table, and would count that point twice in the fit and in
    every resample: refuse it, naming the first repeat."""
    key = ["run", "D"] + [c for c in ("format", "bits") if c in frame]
    repeated = frame.duplicated(subset=key, keep=False).to_numpy()
    if not repeated.any():
        return
    first = int(np.flatnonzero(repeated)[0])
    point = frame.groupby(key, sort=False, dropna=False).ngroup().to_numpy()  # NaN bits match NaN bits
    rows = frame.index[np.flatnonzero(point == point[first])[:2]] + 1  # the input's own rows
    row = frame.iloc[first]
    where = ", ".join(f"{c} {_shown(row[c])}" for c in key[1:])
    count = int(frame.duplicated(subset=key).sum())
    raise InputError(
        f"{column_label('run', mapping)}: {count} of {len(frame)} rows repeat a run at the same "
        f"{', '.join(key[1:])} (first: run {row['run']!r} at {where}, data rows {rows[0]} and {rows[1]}; "
        "was a sweep gathered twice?); allowed: each run once per D (several D per run are fine)"
    )


def _shown(value: object) -> str:
    """A cell as an error line shows it: numbers as 1e+09 or 2, text quoted."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{float(value):g}"
    return repr(str(value))


def check_drop_early(fraction: float) -> None:
    """--drop-early F: 0 <= F < 1 (F = 1 would keep only each run's final row: a table of final losses)."""
    if not (np.isfinite(fraction) and 0 <= fraction < 1):
        raise InputError(
            f"--drop-early: {fraction!r} is not allowed; give a fraction F with 0 <= F < 1 (each run keeps "
            "its rows at D >= F x its largest D; e.g. 0.5)"
        )


def drop_early_rows(frame: pd.DataFrame, fraction: float, has_run: bool) -> tuple[pd.DataFrame, int]:
    """(the rows at D >= fraction x their run's largest D, how many were dropped).  Early in training a run's
    loss still carries its warm-up and learning-rate schedule, not the law (Choshen et al. 2024 drop it)."""
    if not has_run:
        raise InputError(
            "--drop-early: needs a run column (map it with --columns run=COLUMN): without one every row is "
            "its own run and no row is early"
        )
    largest = frame.groupby("run", sort=False)["D"].transform("max").to_numpy(dtype=float)
    keep = frame["D"].to_numpy(dtype=float) >= fraction * largest
    return frame.loc[keep], int((~keep).sum())


def check_p_matches_bits(out: pd.DataFrame, mapping: dict[str, str]) -> None:
    """A row whose P contradicts its ``bits`` column (a hand-edited or mis-joined table) is refused, naming
    the row: P is at least the code bits, and where the row says its format and block size (a `bitlaw
    gather` table: ``quant.block_size``, ``quant.binary_mean``) exactly sweep.contract.bits_per_weight."""
    if "bits" not in out:
        return
    bits = pd.to_numeric(out["bits"], errors="coerce").to_numpy(dtype=float)
    P = out["P"].to_numpy(dtype=float)
    expected = np.full(len(out), np.nan)
    if "format" in out and "quant.block_size" in out:
        blocks = pd.to_numeric(out["quant.block_size"], errors="coerce").to_numpy(dtype=float)
        means = out["quant.binary_mean"].astype(str).str.lower() if "quant.binary_mean" in out else None
        for i, (fmt, b, block) in enumerate(zip(out["format"], bits, blocks, strict=True)):
            if fmt not in contract.FORMATS or not np.isfinite(b) or not np.isfinite(block) or block <= 0:
                continue
            if means is None and (fmt == "binary" or (fmt == "uniform" and b == 1)):
                continue  # 1.25 or 1.5 by binary_mean, which the table does not say
            mean = means is not None and means.iloc[i] == "true"
            expected[i] = contract.bits_per_weight(fmt, int(b), int(block), binary_mean=mean)
    below = np.isfinite(bits) & (bits > P + P_TOLERANCE)
    off = np.isfinite(expected) & (np.abs(P - expected) > P_TOLERANCE)
    bad = below | off
    if not bad.any():
        return
    first = int(np.flatnonzero(bad)[0])
    row = out.iloc[first]
    rule = (f"P_w = {expected[first]:g} for {row['format']} {int(bits[first])}-bit, block "
            f"{int(row['quant.block_size'])}" if off[first] else "P >= bits")
    raise InputError(
        f"{column_label('P', mapping)}: {int(bad.sum())} of {len(out)} rows contradict their bits column "
        f"(first: data row {out.index[first] + 1}, P {P[first]:g} with bits {bits[first]:g}); allowed: "
        f"{rule}; fix the table or drop its bits column"
    )
