"""``bitlaw verify``: test a fit's forecast by training its memory-matched contenders (fit/study/verify.py).

bitlaw verify plan FIT.json --runs RUNS.csv -o DIR [--format F] [--memory M | --envelope inside|beyond]
    [--tokens D] [--arch A] [--block-size B]
    -> DIR/contenders.json, DIR/conf/contender/<point>.yaml, DIR/sweep_overrides.txt
python -m sweep -m $(cat DIR/sweep_overrides.txt) hydra.sweep.dir=SWEEP     # trains the new contenders
bitlaw gather SWEEP -o DIR/runs.csv
bitlaw verify check DIR/contenders.json [DIR2/contenders.json …] --runs DIR/runs.csv [--runs …]
    --runs RUNS.csv -o verify.json [--report R.md]   # {"budgets": [one verdict per plan], "summary": …}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bitlaw.commands._options import accounting, add_bits, check_output, chosen_bits, write_failed

SECTION = "The forecast, tested"
DEFAULT_ARCH = "ladder"  # the demo's family: the CPU ladder's rule (sweep/contract/family.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    steps = parser.add_subparsers(dest="step", required=True, metavar="{plan,check}")
    plan = steps.add_parser(
        "plan", help="pick each bit width's largest model under the budget, predict its loss"
    )
    plan.add_argument("fit", metavar="FIT.json")
    plan.add_argument("--runs", required=True, help="the grid's runs table (what the fit was fitted on)")
    plan.add_argument("-o", "--output", required=True, metavar="DIR", help="where the plan and configs go")
    plan.add_argument("--format", default="kmeans", type=str.lower,
                      help="the recommending format (default kmeans)")
    where = plan.add_mutually_exclusive_group()
    where.add_argument("--memory", help="weight budget, e.g. 164kB (default: the grid's smallest bf16 model)")
    where.add_argument("--envelope", choices=("inside", "beyond"),
                       help="let bitlaw pick the budget from the family and the grid alone: inside = every "
                       "contender within [N_min, 1.5 N_max] and the grid's D/N range; beyond = the largest "
                       "contender >= 2 N_max (fit/study/envelope.py)")
    plan.add_argument("--tokens", help="training tokens D (default: the grid's largest D)")
    plan.add_argument(
        "--arch",
        help="the shapes to choose from: ladder | llama3 | bitlaw | a shapes .yaml/.json (default "
        f"{DEFAULT_ARCH}, the demo's family rule)",
    )
    plan.add_argument("--block-size", type=int,
                      help="weights per quantization scale in the memory model (default: the grid's "
                      "quant.block_size where the runs table has one, else 64)")
    add_bits(plan)
    plan.add_argument("--experiment", default="demo", help="the grid's experiment: its recipe trains them")
    check = steps.add_parser("check", help="set the contenders' measured losses beside the predictions")
    check.add_argument("plan", metavar="CONTENDERS.json", nargs="+",
                       help="one plan per tested budget (verify.json gets one entry per plan)")
    check.add_argument(
        "--runs",
        action="append",
        required=True,
        help="runs table(s) holding the contenders' runs (repeat; the first match wins)",
    )
    check.add_argument("-o", "--output", required=True, metavar="VERIFY.json")
    check.add_argument("--report", metavar="REPORT.md", help="add (or replace) the forecast section there")
    check.add_argument("--title", default=SECTION,
                       help=f"the section's title (default {SECTION!r}); one section per title")
    check.add_argument("--compare", metavar="FIT.json", action="append", default=[],
                       help="another form's fit (e.g. --law efficiency): its forecast of the same contenders")


def run(args: argparse.Namespace) -> int:
    return plan(args) if args.step == "plan" else check(args)


def plan(args: argparse.Namespace) -> int:
    from fit.answer.fit_source import source_from_fit
    from fit.answer.shapes import resolve_arch
    from fit.data.table import read_frame
    from fit.errors import InputError
    from fit.fitfile import load_fit
    from fit.study.envelope import envelope_budget
    from fit.study.verify import choose_contenders, contender_config
    from fit.units import format_bytes, parse_memory, parse_tokens
    from sweep.contract import atomic_write_json, atomic_write_text

    fitfile = load_fit(args.fit)
    grid = read_frame(args.runs)
    shapes = resolve_arch(args.arch or DEFAULT_ARCH)
    budgets = parse_memory(args.memory) if args.memory else [None]
    if len(budgets) != 1:
        raise InputError(f"--memory: one budget, got {len(budgets)} ({args.memory})")
    tokens = parse_tokens(args.tokens) if args.tokens else None
    acct = grid_accounting(grid, args.block_size)
    # the widths inside the fit's data span, as recommend's default: a fixed 1,2,3,4,16 refused any fit
    # without 1-bit runs (the tour's) with an error naming --bits, an option verify plan lacked
    bits = chosen_bits(args.bits, source_from_fit(fitfile), acct)
    out = check_output(args.output, "dir")
    conf_dir = str((out / "conf").resolve())
    # sweep_overrides.txt is used as $(cat …): the shell splits at whitespace, and Hydra's grammar refused
    # an unquoted '=' or ',' in the path (a LexerNoViableAltException); the path goes in Hydra's quotes
    if any(c.isspace() or c in "'\\" for c in conf_dir):
        raise InputError(f"-o: {conf_dir!r} holds whitespace, a quote or a backslash, which "
                         "`python -m sweep -m $(cat sweep_overrides.txt)` cannot pass on; pick another dir")
    budget = budgets[0]
    if args.envelope:
        D = tokens if tokens is not None else float(grid["D"].max())
        budget = envelope_budget(args.envelope, shapes, grid, D, tuple(bits), args.format, acct)
    result = choose_contenders(fitfile, grid, args.format, shapes, budget, tokens, bits=tuple(bits),
                               acct=acct, envelope=args.envelope)

    # largest first: the local pool hands runs out in this order, so its workers end together
    new = sorted((c for c in result.contenders if not c.in_grid), key=lambda c: -c.N_quant)
    overrides = [
        f"experiment={args.experiment}",
        f"hydra.searchpath=['file://{conf_dir}']",
        *grid_axes_dropped(args.experiment),  # the grid's axes give way to the contender axis
        "train.branches=[]",
        f"train.tokens={int(result.D)}",
        "+contender=" + ",".join(c.config_name for c in new),
    ]

    print(
        (f"envelope {result.envelope}: " if result.envelope else "")
        + f"budget {format_bytes(result.budget_bytes)} ({result.budget_bytes:,.0f} bytes), "
        f"D {result.D:,.0f}, "
        f"format {result.format}; predicted winner: "
        + (f"{result.predicted_winner} bits" if result.predicted_winner else "none")
        + (f" (not decidable: {result.undecided_reason})" if result.undecided_reason else "")
    )
    for c in result.contenders:
        ci = f" [{c.predicted_ci[0]:.4f}, {c.predicted_ci[1]:.4f}]" if c.predicted_ci else ""
        if c.forecast:
            lo, hi = c.forecast["interval"]
            ci += (f" forecast [{lo:.4f}, {hi:.4f}] at N factor "
                   f"{c.forecast['N_factor']:.3g}, D/N {c.forecast['D_over_N']:.3g}")
        where = "in the grid" if c.in_grid else f"to train: contender={c.config_name}"
        print(
            f"  {c.bits:>2} bits  {c.model:<8} N_quant {c.N_quant:>9,}  {c.memory_bytes:>9,.0f} B  "
            f"predicted {c.predicted_loss:.4f}{ci}  ({where})"
        )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    group = out / "conf" / "contender"
    try:  # after the printing: a write that still fails loses no results
        group.mkdir(parents=True, exist_ok=True)
        for stale in group.glob("*.yaml"):
            stale.unlink()
        for c in new:
            atomic_write_text(group / f"{c.config_name}.yaml", contender_config(c))
        atomic_write_json(out / "contenders.json", result.as_dict())
        atomic_write_text(out / "sweep_overrides.txt", "\n".join(overrides) + "\n")
    except OSError as err:
        raise write_failed(err.filename or out, err) from None
    print(
        f"wrote {out / 'contenders.json'}, {len(new)} contender config(s) and {out / 'sweep_overrides.txt'}"
    )
    return 0


def check(args: argparse.Namespace) -> int:
    from fit.data.table import read_frame
    from fit.errors import InputError
    from fit.fitfile import load_fit
    from fit.render.verify_text import render_budgets
    from fit.study.verify import ContenderPlan, other_form, summarize, verdict
    from sweep.contract import atomic_write_json

    check_output(args.output)
    if args.report:
        check_output(args.report, option="--report")
    plans = []
    for path in args.plan:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"CONTENDERS.json: cannot read {path}: {err}") from None
        plans.append(ContenderPlan.from_dict(data))
    others = [(load_fit(path), path) for path in args.compare]  # a bad file fails before anything is written
    tables = [read_frame(path) for path in args.runs]
    budgets = []
    for contender_plan in plans:
        result = verdict(contender_plan, tables)
        result["other_forms"] = [other_form(contender_plan, result, fit, path) for fit, path in others]
        budgets.append(result)
    result = {"budgets": budgets, "summary": summarize(budgets)}
    text = render_budgets(result)
    print(text, end="")  # first: a write that still fails loses no results
    try:
        atomic_write_json(args.output, result)
    except OSError as err:
        raise write_failed(args.output, err) from None
    if args.report:
        try:
            add_section(Path(args.report), text, args.title)
        except OSError as err:
            raise write_failed(args.report, err, "--report") from None
    print(f"wrote {args.output}" + (f" and the section in {args.report}" if args.report else ""))
    return 0


def grid_axes_dropped(experiment: str) -> list[str]:
    """The overrides that take the grid's sweep axes off a contender sweep. An experiment whose axes are
    the config group ``grid`` (conf/grid/<experiment>.yaml, as experiment=demo's) drops the group; the
    others are assumed to sweep ``model`` and ``point`` (Hydra cannot delete a swept key such as
    ``model.d_model`` by name, nor empty the sweeper's params)."""
    from sweep.contract import conf_dir

    if (conf_dir() / "grid" / f"{experiment}.yaml").is_file():
        return ["~grid"]
    return ["~hydra.sweeper.params.model", "~hydra.sweeper.params.point"]


def grid_accounting(grid: Any, block_size: int | None) -> Any:
    """The memory model's bits per weight: --block-size, else the grid's own quant.block_size (one value
    over its quantized runs), else 64. A grid of blocks of 32 costed at 64 would pick larger contenders than
    its budget holds."""
    import pandas as pd

    from fit.errors import InputError

    if block_size is None and "quant.block_size" in grid.columns:
        quantized = grid[grid["format"] != "none"] if "format" in grid.columns else grid
        blocks = set(pd.to_numeric(quantized["quant.block_size"], errors="coerce").dropna().astype(int))
        if len(blocks) > 1:
            raise InputError(f"--runs: the grid mixes quant.block_size {sorted(blocks)}; pass --block-size")
        block_size = blocks.pop() if blocks else None
    return accounting(block_size or 64, 16)


def add_section(report: Path, body: str, title: str = SECTION) -> None:
    """Put the forecast section into the report, replacing an earlier one (re-running stays idempotent)."""
    text = report.read_text() if report.exists() else ""
    begin, end = f"<!-- bitlaw verify: {title} -->", f"<!-- bitlaw verify end: {title} -->"
    block = f"{begin}\n## {title}\n\n{body}{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    from sweep.contract import atomic_write_text

    atomic_write_text(report, text)
