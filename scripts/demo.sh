#!/usr/bin/env bash
# `make demo`: a real CPU sweep -> gather -> fit -> plots + report -> recommendation, into results/demo/.
# Re-running is cheap: completed runs in sweeps/demo are skipped (same run_id), only the analysis reruns.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-results/demo}
SWEEP=${SWEEP:-sweeps/demo}
BOOTSTRAP=${BOOTSTRAP:-1000}
# Budgets and tokens for the 1-Bit Wonder question on Llama-3 shapes; the ranking at fixed D depends only on
# gamma and the memory model (docs/method.md §7), so the tiny-model fit's gamma carries over, its loss does not.
MEMORY=${MEMORY:-1GB,2GB,4GB,8GB,16GB,32GB,64GB}
TOKENS=${TOKENS:-1.5e11}
# The demo's own model family (conf/model ladder, interpolated) at budgets its fit covers.
SMALL_MEMORY=${SMALL_MEMORY:-80kB,100kB,150kB,200kB,300kB,400kB}

start=$(date +%s)
step() { printf '\n== [%s, %ss] %s\n' "$(date +%T)" "$(( $(date +%s) - start ))" "$*"; }
mkdir -p "$OUT"

step "1/5 sweep: experiment=demo on the local launcher (108 runs; completed ones are skipped)"
# W&B is off here only to keep the demo inside 10 minutes (offline logging adds ~1.4 s per run).
"$BIN/python" -m sweep -m experiment=demo hydra.sweep.dir="$SWEEP" logger.wandb.mode=disabled

step "2/5 gather the run dirs into $OUT/runs.csv"
"$BIN/bitlaw" gather "$SWEEP" -o "$OUT/runs.csv"

step "3/5 fit the precision-aware law per format, bootstrap x$BOOTSTRAP by run"
"$BIN/bitlaw" fit "$OUT/runs.csv" -o "$OUT/fit.json" --law precision --by format --bootstrap "$BOOTSTRAP"

step "4/5 plots and report into $OUT"
"$BIN/bitlaw" report "$OUT/fit.json" --data "$OUT/runs.csv" -o "$OUT" --memory "$MEMORY" --tokens "$TOKENS" \
  --preceded-by "make demo  # = scripts/demo.sh, which runs:" \
  --preceded-by "python -m sweep -m experiment=demo hydra.sweep.dir=$SWEEP logger.wandb.mode=disabled" \
  --preceded-by "bitlaw gather $SWEEP -o $OUT/runs.csv"

step "5/5 recommendation: best bit width by memory budget"
for fmt in kmeans uniform; do
  "$BIN/bitlaw" recommend "$OUT/fit.json" --format "$fmt" --memory "$MEMORY" --tokens "$TOKENS" \
    --arch llama3:continuous
  "$BIN/bitlaw" recommend "$OUT/fit.json" --format "$fmt" --memory "$SMALL_MEMORY" \
    --tokens "$(awk -F, 'NR==1{for(i=1;i<=NF;i++)if($i=="D")c=i} NR>1&&$c>m{m=$c} END{print m}' "$OUT/runs.csv")" \
    --arch bitlaw:continuous
done
step "done: $OUT/report.md ($(( $(date +%s) - start )) s in all)"
