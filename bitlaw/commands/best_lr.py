"""``bitlaw best-lr TABLE|SWEEP_DIR``: the best learning rate per model size of an lr sweep
(fit/data/lr_search.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fit.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="TABLE|SWEEP_DIR",
                        help="a runs table (bitlaw gather) or a sweep dir of experiment=lr_sweep")
    parser.add_argument("--lr-column", default="train.lr", help="the learning-rate column (default train.lr)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")


def run(args: argparse.Namespace) -> int:
    from fit.data.gather import gather, to_frame
    from fit.data.lr_search import best_learning_rates
    from fit.data.table import read_frame

    source = Path(args.source)
    if source.is_dir():
        rows = gather([source]).rows
        if not rows:
            raise InputError(f"SWEEP_DIR {source}: no completed runs")
        frame = to_frame(rows)
    elif source.is_file():
        frame = read_frame(source)
    else:
        raise InputError(f"TABLE|SWEEP_DIR: {source} does not exist")
    results = best_learning_rates(frame, args.lr_column)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=1))
        return 0
    for r in results:
        tried = ", ".join(f"{lr:g}: {loss:.4f}" for lr, loss in r.tried)
        where = "interior" if r.interior else "AT THE EDGE of the lrs tried: search further"
        vertex = f"; parabola in log lr: {r.parabola_lr:.3g}" if r.parabola_lr else ""
        shape = f" (d_model {r.d_model})" if r.d_model else ""
        print(f"N={r.N:,.0f}{shape}: best lr {r.best_lr:g} (loss {r.best_loss:.4f}, {where}{vertex})"
              f"  [{tried}]")
    return 0
