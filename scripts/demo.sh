#!/usr/bin/env bash
# `make demo`: plan -> a real CPU sweep -> gather -> fit (every law form) -> report -> the forecast, tested:
# the fit's memory-matched contenders are trained and their losses compared with the prediction.
# Re-running is cheap: completed runs in sweeps/demo and sweeps/demo_verify are skipped (same run_id).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-results/demo}
SWEEP=${SWEEP:-sweeps/demo}
VERIFY_SWEEP=${VERIFY_SWEEP:-sweeps/demo_verify}
BOOTSTRAP=${BOOTSTRAP:-1000}
FORM_BOOTSTRAP=${FORM_BOOTSTRAP:-200}  # the other forms' and the two-stage check's resamples
CONTROL=${CONTROL:-0}  # 1: also train the shape control (two-layer contenders; ~4 min more)
PLAN_SIMULATIONS=${PLAN_SIMULATIONS:-20}
FORMAT=${FORMAT:-kmeans}   # the recommending format whose forecast is tested
# Budgets and tokens for the 1-Bit Wonder question on Llama-3 shapes; the ranking at fixed D depends only on
# gamma and the memory model (docs/method.md §7), so the tiny-model fit's gamma carries over, its loss does not.
MEMORY=${MEMORY:-1GB,2GB,4GB,8GB,16GB,32GB,64GB}
TOKENS=${TOKENS:-1.5e11}
# W&B is off only to keep the demo short (offline logging adds ~1.4 s per run).
SWEEP_ARGS=(logger.wandb.mode=disabled)

start=$(date +%s)
step() { printf '\n== [%s, %ss] %s\n' "$(date +%T)" "$(( $(date +%s) - start ))" "$*"; }
mkdir -p "$OUT"

step "1/8 plan: will experiment=demo identify the law, and what does it cost? (1-Bit Wonder's k-means law)"
# The plan depends only on the grid and the law, not on any run: it is redone when the grid changes (or
# with PLAN=1), else the last one is kept ($OUT/plan.txt). 2.1e10 FLOP/s per core: benchmarks/qat_step.py.
if [[ ${PLAN:-0} == 1 || ! -s $OUT/plan.txt || conf/experiment/demo.yaml -nt $OUT/plan.txt ]]; then
  "$BIN/bitlaw" plan experiment=demo --preset 1bw-kmeans --simulations "$PLAN_SIMULATIONS" --workers 2 \
    --flops-per-s 4.2e10 > "$OUT/plan.txt.new" && mv "$OUT/plan.txt.new" "$OUT/plan.txt"
fi
cat "$OUT/plan.txt"

step "2/8 sweep: experiment=demo on the local launcher (36 trunks, 108 runs; completed ones are skipped)"
"$BIN/python" -m sweep -m experiment=demo hydra.sweep.dir="$SWEEP" "${SWEEP_ARGS[@]}"

step "3/8 gather the run dirs into $OUT/runs.csv"
"$BIN/bitlaw" gather "$SWEEP" -o "$OUT/runs.csv"

step "4/8 fit the precision-aware law per format, bootstrap x$BOOTSTRAP by trunk within each design point"
"$BIN/bitlaw" fit "$OUT/runs.csv" -o "$OUT/fit.json" --law precision --by format --bootstrap "$BOOTSTRAP"

step "5/8 the forecast: each bit width's largest model at the grid's smallest bf16 model's memory ($FORMAT)"
"$BIN/bitlaw" verify plan "$OUT/fit.json" --runs "$OUT/runs.csv" --format "$FORMAT" -o "$OUT/verify"
mapfile -t CONTENDERS < "$OUT/verify/sweep_overrides.txt"

step "6/8 train the contenders the grid never trained (same recipe, the grid's largest D); meanwhile fit the law's other forms"
# The other forms and Quartet's two-stage check (A, B, E, alpha, beta from the bf16 anchors alone, then gamma)
# run beside the contenders: the 1-bit contender trains alone on one core for most of this step.
(
  "$BIN/bitlaw" fit "$OUT/runs.csv" -o "$OUT/fit_efficiency.json" --law efficiency --by format \
    --bootstrap "$FORM_BOOTSTRAP" --workers 1
  "$BIN/bitlaw" fit "$OUT/runs.csv" -o "$OUT/fit_penalty.json" --law penalty --by format --workers 1
  "$BIN/bitlaw" fit "$OUT/runs.csv" -o "$OUT/fit_two_stage.json" --law precision --by format --two-stage \
    --bootstrap "$FORM_BOOTSTRAP" --workers 1
) > "$OUT/forms.log" 2>&1 &
forms_pid=$!
"$BIN/python" -m sweep -m "${CONTENDERS[@]}" hydra.sweep.dir="$VERIFY_SWEEP" "${SWEEP_ARGS[@]}"
"$BIN/bitlaw" gather "$VERIFY_SWEEP" -o "$OUT/verify/runs.csv"
wait "$forms_pid" || { cat "$OUT/forms.log"; exit 1; }
cat "$OUT/forms.log"

if [[ $CONTROL == 1 ]]; then
  step "6b/8 the shape control: the same budget with two-layer contenders (width grows instead of depth)"
  "$BIN/bitlaw" verify plan "$OUT/fit.json" --runs "$OUT/runs.csv" --format "$FORMAT" -o "$OUT/verify_wide" \
    --arch bitlaw/shapes/demo_family_wide.yaml
  mapfile -t CONTENDERS_WIDE < "$OUT/verify_wide/sweep_overrides.txt"
  "$BIN/python" -m sweep -m "${CONTENDERS_WIDE[@]}" hydra.sweep.dir="${VERIFY_SWEEP}_wide" "${SWEEP_ARGS[@]}"
  "$BIN/bitlaw" gather "${VERIFY_SWEEP}_wide" -o "$OUT/verify_wide/runs.csv"
fi

step "7/8 plots and report into $OUT (the law's forms compared)"
# No --tokens here: the figures' fixed D stays the data's largest (1M), not the Llama-3 1.5e11 of the
# recommendation below, where a tiny-model fit's absolute loss (E is not identified) means nothing.
"$BIN/bitlaw" report "$OUT/fit.json" --data "$OUT/runs.csv" -o "$OUT" --memory "$MEMORY" \
  --forms "$OUT/fit_efficiency.json" --forms "$OUT/fit_penalty.json" \
  --preceded-by "make demo  # = scripts/demo.sh, which runs:" \
  --preceded-by "python -m sweep -m experiment=demo hydra.sweep.dir=$SWEEP ${SWEEP_ARGS[*]}" \
  --preceded-by "bitlaw gather $SWEEP -o $OUT/runs.csv"
{
  printf '\n## The plan (before any run)\n\n`bitlaw plan experiment=demo --preset 1bw-kmeans --simulations %s`' \
    "$PLAN_SIMULATIONS"
  printf ' chose this grid: it simulates the grid with 1-Bit Wonder'"'"'s k-means law and fits every replica.\n\n'
  printf '```\n'; cat "$OUT/plan.txt"; printf '```\n'
} >> "$OUT/report.md"

step "8/8 the forecast, tested: predicted vs measured contenders -> $OUT/verify.json"
"$BIN/bitlaw" verify check "$OUT/verify/contenders.json" --runs "$OUT/verify/runs.csv" --runs "$OUT/runs.csv" \
  -o "$OUT/verify.json" --report "$OUT/report.md" --compare "$OUT/fit_efficiency.json" \
  --compare "$OUT/fit_penalty.json"
if [[ $CONTROL == 1 ]]; then
  "$BIN/bitlaw" verify check "$OUT/verify_wide/contenders.json" --runs "$OUT/verify_wide/runs.csv" \
    --runs "$OUT/runs.csv" -o "$OUT/verify_wide.json" --report "$OUT/report.md" \
    --title "The forecast, tested on two-layer contenders (shape control)" \
    --compare "$OUT/fit_efficiency.json" --compare "$OUT/fit_penalty.json"
fi
for fmt in kmeans uniform; do
  "$BIN/bitlaw" recommend "$OUT/fit.json" --format "$fmt" --memory "$MEMORY" --tokens "$TOKENS" \
    --arch llama3:continuous
done
step "done: $OUT/report.md ($(( $(date +%s) - start )) s in all)"
