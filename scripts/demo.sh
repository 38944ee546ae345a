#!/usr/bin/env bash
# `make demo`: plan -> a real CPU sweep -> gather -> fit -> backtest -> report -> the forecast, tested at two
# budgets chosen before any contender trains: one inside the grid's envelope, one beyond it.
# Re-running is cheap: completed runs in sweeps/demo and sweeps/demo_verify are skipped (same run_id).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-results/demo}
SWEEP=${SWEEP:-sweeps/demo}
VERIFY_SWEEP=${VERIFY_SWEEP:-sweeps/demo_verify}
BOOTSTRAP=${BOOTSTRAP:-1000}
FORM_BOOTSTRAP=${FORM_BOOTSTRAP:-100}  # the other forms' resamples
PLAN_SIMULATIONS=${PLAN_SIMULATIONS:-20}
FORMAT=${FORMAT:-kmeans}   # the recommending format whose forecast is tested
# The contenders' D: between the grid's 576k and 768k (so no contender is a grid run), every inside
# contender's D/N within the grid's 1.04-31 (method.md §15).
VERIFY_TOKENS=${VERIFY_TOKENS:-640000}
MEMORY=${MEMORY:-1GB,2GB,4GB,8GB,16GB,32GB,64GB}
TOKENS=${TOKENS:-1.5e11}
# W&B is off only to keep the demo short (offline logging adds ~1.4 s per run).
SWEEP_ARGS=(logger.wandb.mode=disabled)

start=$(date +%s)
step() { printf '\n== [%s, %ss] %s\n' "$(date +%T)" "$(( $(date +%s) - start ))" "$*"; }
mkdir -p "$OUT"

step "1/9 plan: will experiment=demo identify the law, and what does it cost? (1-Bit Wonder's k-means law)"
# The plan depends only on the grid and the law, not on any run: it is redone when the grid changes (or
# with PLAN=1), else the last one is kept ($OUT/plan.txt, up to the forecasts' section that step 5 rewrites).
if [[ ${PLAN:-0} == 1 || ! -s $OUT/plan.txt || conf/experiment/demo.yaml -nt $OUT/plan.txt ]]; then
  "$BIN/bitlaw" plan experiment=demo --preset 1bw-kmeans --simulations "$PLAN_SIMULATIONS" --workers 2 \
    --flops-per-s 4.2e10 > "$OUT/plan.txt.new" && mv "$OUT/plan.txt.new" "$OUT/plan.txt"
fi
sed -i '/^== The forecasts, recorded before any contender trained/,$d' "$OUT/plan.txt"
cat "$OUT/plan.txt"

step "2/9 sweep: experiment=demo on the local launcher (28 trunks, 84 runs; completed ones are skipped)"
"$BIN/python" -m sweep -m experiment=demo hydra.sweep.dir="$SWEEP" "${SWEEP_ARGS[@]}"

step "3/9 gather the run dirs into $OUT/runs.csv"
"$BIN/bitlaw" gather "$SWEEP" -o "$OUT/runs.csv"

step "4/9 fit the precision-aware law per format, bootstrap x$BOOTSTRAP by trunk within each design point"
"$BIN/bitlaw" fit "$OUT/runs.csv" -o "$OUT/fit.json" --law precision --by format --bootstrap "$BOOTSTRAP"

step "5/9 the forecasts, recorded before any contender trains: one budget inside the grid, one beyond it ($FORMAT)"
{
  printf '\n== The forecasts, recorded before any contender trained (bitlaw verify plan, %s)\n' "$(date -u +%FT%TZ)"
  for envelope in inside beyond; do
    printf '\n$ bitlaw verify plan %s --runs %s --format %s --envelope %s --tokens %s -o %s\n' \
      "$OUT/fit.json" "$OUT/runs.csv" "$FORMAT" "$envelope" "$VERIFY_TOKENS" "$OUT/verify_$envelope"
    "$BIN/bitlaw" verify plan "$OUT/fit.json" --runs "$OUT/runs.csv" --format "$FORMAT" --envelope "$envelope" \
      --tokens "$VERIFY_TOKENS" -o "$OUT/verify_$envelope" 2>&1
  done
} | tee -a "$OUT/plan.txt"

step "6/9 train both budgets' contenders in one sweep; meanwhile the backtest and the law's other forms"
(
  "$BIN/bitlaw" backtest "$OUT/runs.csv" --law precision,coupled --by format -o "$OUT/backtest" --workers 1
  "$BIN/bitlaw" fit "$OUT/runs.csv" -o "$OUT/fit_coupled.json" --law coupled --by format \
    --bootstrap "$FORM_BOOTSTRAP" --workers 1
  "$BIN/bitlaw" fit "$OUT/runs.csv" -o "$OUT/fit_efficiency.json" --law efficiency --by format \
    --bootstrap "$FORM_BOOTSTRAP" --workers 1
) > "$OUT/forms.log" 2>&1 &
forms_pid=$!
# One sweep for both budgets (the pool keeps both cores busy to the end): each plan's Hydra group is on the
# search path, its options prefixed with its envelope (beyond_kmeans1, inside_kmeans1, ...), largest first.
searchpath=() contenders=()
for envelope in beyond inside; do
  searchpath+=("'file://$(realpath "$OUT/verify_$envelope/conf")'")
  contenders+=("$(sed -n 's/^+contender=//p' "$OUT/verify_$envelope/sweep_overrides.txt")")
done
"$BIN/python" -m sweep -m experiment=demo "hydra.searchpath=[$(IFS=,; echo "${searchpath[*]}")]" '~grid' \
  'train.branches=[]' "train.tokens=$VERIFY_TOKENS" "+contender=$(IFS=,; echo "${contenders[*]}")" \
  hydra.sweep.dir="$VERIFY_SWEEP" "${SWEEP_ARGS[@]}"
"$BIN/bitlaw" gather "$VERIFY_SWEEP" -o "$OUT/verify_runs.csv"
wait "$forms_pid" || { cat "$OUT/forms.log"; exit 1; }
cat "$OUT/forms.log"

step "7/9 plots and report into $OUT (the law's forms compared)"
# No --tokens here: the figures' fixed D stays the data's largest (768k), not the Llama-3 1.5e11 of the
# recommendation below, where a tiny-model fit's absolute loss (E is not identified) means nothing.
"$BIN/bitlaw" report "$OUT/fit.json" --data "$OUT/runs.csv" -o "$OUT" --memory "$MEMORY" \
  --forms "$OUT/fit_coupled.json" --forms "$OUT/fit_efficiency.json" \
  --preceded-by "make demo  # = scripts/demo.sh, which runs:" \
  --preceded-by "python -m sweep -m experiment=demo hydra.sweep.dir=$SWEEP ${SWEEP_ARGS[*]}" \
  --preceded-by "bitlaw gather $SWEEP -o $OUT/runs.csv"
{
  printf '\n## The plan (before any run)\n\n`bitlaw plan experiment=demo --preset 1bw-kmeans --simulations %s`' \
    "$PLAN_SIMULATIONS"
  printf ' chose this grid: it simulates the grid with 1-Bit Wonder'"'"'s k-means law and fits every replica.'
  printf ' The forecasts tested below were recorded at its end before their contenders trained.\n\n'
  printf '```\n'; cat "$OUT/plan.txt"; printf '```\n'
  printf '\n## The backtest: which form forecasts larger sizes best\n\n'
  printf '`bitlaw backtest %s --law precision,coupled --by format -o %s`\n\n```\n' "$OUT/runs.csv" "$OUT/backtest"
  sed -n '/^backtest/,$p' "$OUT/forms.log" | sed '/^precision law\|^coupled law\|^efficiency law/,$d'
  printf '```\n'
} >> "$OUT/report.md"

step "8/9 the forecasts, tested: predicted vs measured contenders at both budgets -> $OUT/verify.json"
"$BIN/bitlaw" verify check "$OUT/verify_inside/contenders.json" "$OUT/verify_beyond/contenders.json" \
  --runs "$OUT/verify_runs.csv" --runs "$OUT/runs.csv" \
  -o "$OUT/verify.json" --report "$OUT/report.md" --compare "$OUT/fit_coupled.json" \
  --compare "$OUT/fit_efficiency.json"

step "9/9 the 1-Bit Wonder question on Llama-3 shapes, from this fit's gamma"
# the ranking at fixed D depends only on gamma and the memory model (docs/method.md §7), so the tiny-model
# fit's gamma carries over, its loss does not
for fmt in kmeans uniform; do
  "$BIN/bitlaw" recommend "$OUT/fit.json" --format "$fmt" --memory "$MEMORY" --tokens "$TOKENS" \
    --arch llama3:continuous
done
step "done: $OUT/report.md ($(( $(date +%s) - start )) s in all)"
