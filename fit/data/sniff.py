"""What a table read as CSV or JSONL can say about itself when it is not what bitlaw reads.

pandas reads a ';'-delimited file as one column named by the whole header, renames a repeated header
name ``loss`` to ``loss.1`` (so the first of two different loss columns is used without a word), and names
a bad JSONL line by its byte position.  Each of these is turned into one line naming what to change.
Kept apart from fit.data.table so the reader stays about reading.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pandas as pd

from fit.errors import InputError

OTHER_DELIMITERS = {";": "';'", "\t": "tab", "|": "'|'"}


def check_csv_header(path: Path, frame: pd.DataFrame, sep: str) -> None:
    """One column read whose name holds another delimiter, or a header naming a column twice: refuse."""
    if frame.shape[1] == 1:
        name = str(frame.columns[0])
        for delimiter, label in OTHER_DELIMITERS.items():
            if delimiter != sep and delimiter in name:
                raise InputError(
                    f"DATA {path}: one column read, and its header holds {label}: the file looks "
                    f"{label}-delimited; bitlaw reads ',' in .csv and tab in .tsv (convert it, or name "
                    "it .tsv for tabs)"
                )
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle, delimiter=sep), [])
    repeated = sorted(name for name, count in Counter(header).items() if count > 1 and name)
    if repeated:
        raise InputError(
            f"DATA {path}: the header names column(s) {', '.join(map(repr, repeated))} more than once; "
            "which one is meant is ambiguous: rename or drop the copies"
        )


def jsonl_error(path: Path) -> InputError | None:
    """The first line of a JSONL file that is not a JSON object, by its line number (None if all are)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                return InputError(f"DATA {path}: line {number} is not valid JSON ({err.msg}); fix or drop it")
            if not isinstance(record, dict):
                return InputError(f"DATA {path}: line {number} is not a JSON object ({{\"N\": ..., ...}})")
    return None
