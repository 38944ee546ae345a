"""Options more than one subcommand takes, and how they are read: defined once here, so no subcommand
imports another (recommend, plot, report and plan share the law source and the bit accounting; plot and
report share the study options; fit and gather share the N conventions). Light to import (fit/ modules
load inside the functions), so `bitlaw fit --help` stays fast."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fit.errors import InputError

if TYPE_CHECKING:
    from fit.answer.memory import BitAccounting
    from fit.answer.presets import LawSource

N_CONVENTIONS = ("quant", "nonembed", "total")  # which count of a `bitlaw gather` table is N
DEFAULT_BUDGETS = "1GB,2GB,4GB,8GB,16GB,32GB,64GB"  # plot and report: the budgets compared
STUDY_ARCH = "llama3:continuous"  # plot and report: the family of the memory figures and tables


def add_drop_early(parser: argparse.ArgumentParser) -> None:
    """--drop-early F (fit and backtest): drop each run's early rows of a checkpoint table."""
    parser.add_argument(
        "--drop-early", type=float, default=0.0, metavar="F",
        help="drop each run's rows below F x that run's largest D, 0 <= F < 1 (a table with several rows "
        "per run, e.g. checkpoints; the early phase of training; default 0: keep all)",
    )


def drop_early_line(fraction: float, dropped: int, rows_before: int) -> str:
    """What --drop-early did, in one line (fit and backtest print it)."""
    return (f"--drop-early {fraction:g}: dropped {dropped} of {rows_before} rows (each run's rows below "
            f"{fraction:g} x its largest D)")


def add_allow_other_data(parser: argparse.ArgumentParser) -> None:
    """--allow-other-data (report and plot): --data must be the fitted table unless this says otherwise."""
    parser.add_argument("--allow-other-data", action="store_true",
                        help="draw the fit over a --data table other than the one it was fitted to (its "
                        "sha256 differs from fit.json's), with a warning; refused without it")


# ----------------------------------------------------------------------------- the law: FIT.json | --preset


def load_source(fit: str | None, preset: str | None) -> LawSource:
    """The law a command answers from: a fit.json or a preset's published constants, exactly one."""
    from fit.answer.fit_source import source_from_fit
    from fit.answer.presets import PRESETS, get_preset
    from fit.fitfile import load_fit

    presets = ", ".join(PRESETS)
    if fit and preset:
        raise InputError(f"give FIT.json or --preset, not both (FIT.json {fit}, --preset {preset})")
    if not fit and not preset:
        raise InputError(f"FIT.json: required, or --preset NAME (one of: {presets})")
    return get_preset(preset) if preset else source_from_fit(load_fit(fit))


# ----------------------------------------------------------------------------- bits and their accounting


def add_bits(parser: argparse.ArgumentParser) -> None:
    """--bits: the widths compared (read back with `chosen_bits`)."""
    from fit.units import DEFAULT_BITS

    widths = ",".join(map(str, DEFAULT_BITS))
    parser.add_argument("--bits", help=f"bit widths to compare, 16 = bf16 (default: those of {widths} inside "
                        "the fit's data; all of them for a preset)")


def add_scale_accounting(parser: argparse.ArgumentParser) -> None:
    """--block-size, --scale-bits: what the scales cost per weight (read back with `accounting`)."""
    parser.add_argument(
        "--block-size", type=int, default=64, help="weights per quantization scale (default 64)"
    )
    parser.add_argument("--scale-bits", type=int, default=16, help="bits per stored scale (default 16, bf16)")


def accounting(block_size: int, scale_bits: int) -> BitAccounting:
    from fit.answer.memory import BitAccounting

    if block_size < 1:
        raise InputError(f"--block-size: must be a positive integer, got {block_size}")
    if scale_bits < 0:
        raise InputError(f"--scale-bits: must be 0 or more, got {scale_bits}")
    return BitAccounting(block_size, scale_bits)


def chosen_bits(given: str | None, source: LawSource, acct: BitAccounting) -> list[int]:
    """--bits as given, else the default widths every fitted format's data span. (A fixed default failed
    late, on the first figure or budget, for a fit without 1-bit runs.) Presets have no span: all of them."""
    from fit.answer.query import can_answer
    from fit.units import DEFAULT_BITS, parse_bits

    if given is not None:
        return parse_bits(given)
    keep = list(DEFAULT_BITS)
    for fmt, p_range in source.p_range.items():
        if fmt == "none":
            continue
        fmt = source.default_format if fmt == "all" else fmt  # a fit without --by serves any format
        law = source.law(fmt)
        # the rule of fit.answer.recommend.check_bits_in_range, which refuses a width outside the span
        keep = [b for b in keep if p_range[0] - 1e-9 <= law.law_p(b, acct.p_w(b, fmt)) <= p_range[1] + 1e-9]
        # an efficiency fit has an eff only at the P it fitted: leave out widths it cannot answer
        keep = [b for b in keep if can_answer(law.params, law.law_p(b, acct.p_w(b, fmt)))]
    return keep or list(DEFAULT_BITS)


# ----------------------------------------------------------------------------- plot and report


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """Options ``plot`` and ``report`` share."""
    parser.add_argument("fit", nargs="?", metavar="FIT.json", help="a precision, efficiency or penalty fit")
    parser.add_argument("--data", metavar="RUNS", help="the runs table the fit used (CSV, JSONL or Parquet)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument(
        "--memory", default=DEFAULT_BUDGETS, help=f"budgets to compare (default {DEFAULT_BUDGETS})"
    )
    parser.add_argument(
        "--tokens", help="fixed D for isoloss and recommendation (default: the data's largest D)"
    )
    parser.add_argument(
        "--arch",
        default=STUDY_ARCH,
        help=f"model family for the memory figures and tables (default {STUDY_ARCH})",
    )
    add_bits(parser)
    add_scale_accounting(parser)


def output_dir(path: str) -> Path:
    """-o DIR, created if needed, or one line saying why it cannot be written (before any work)."""
    out = check_output(path, "dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"-o/--output: cannot create directory {out}: {err.strerror}") from None
    return out


def check_output(path: str | Path, kind: str = "file", option: str = "-o/--output") -> Path:
    """An output path, checked before any work: a file where a file is expected (not a directory), a
    directory where one is expected, and a file can be made where it goes (in its directory, or in the
    nearest existing one above it, where the writer will create the rest).  Creates nothing, so a refusal
    later leaves nothing behind.  Raises the one-line InputError naming ``option``.  (A read-only -o used to
    fail only when the results were written, after the whole fit, with a traceback.)  Writability is tried,
    not read off the mode bits: os.access lets root through a mode-555 directory, and ACLs are not in the
    mode."""
    out = Path(path)
    if kind == "file" and out.is_dir():
        raise InputError(f"{option}: {out} is a directory; give a file path, e.g. {out / 'out'}{out.suffix}")
    if kind == "dir" and out.exists() and not out.is_dir():
        raise InputError(f"{option}: {out} is a file, not a directory")
    folder = out if kind == "dir" else out.parent
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{option}: cannot create directory {folder}: {existing} is a file")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".bitlaw-write-test-"):
            pass
    except OSError as err:
        where = f"directory {folder}" if existing == folder.absolute() else f"{existing} (to create {folder})"
        raise InputError(f"{option}: cannot write into {where} ({err.strerror})") from None
    return out


def write_failed(path: str | Path, err: OSError, option: str = "-o/--output") -> InputError:
    """The one line for an output that could still not be written at the end (the disk filled, the
    directory was removed or made read-only meanwhile): the results were printed above it."""
    reason = err.strerror or str(err)
    return InputError(f"{option}: cannot write {path} ({reason}); the results above are not saved")
