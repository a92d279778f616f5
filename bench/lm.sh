#!/usr/bin/env bash
# bench/lm.sh: does growth-based density discovery find the knee on a language model? (docs/method.md, Language
# models; the paper's open question 4)
#
# gpt-mini (a 4-layer causal transformer over byte tokens) on pydoc-text (CPython's own documentation, split by
# topic), all with AdamW and the same trainer:
#   sweep   one-shot PHEW masks at DENSITIES, every seed: the ground-truth accuracy-density curve and its knee;
#           its density-1 points are the dense baseline
#   pwmpr   pwmpr grow from each of SEED_DENSITIES, every seed, with the method's defaults (plateau stop, cost guard)
#   phew    one-shot PHEW at PWMPR's mean discovered density of each seed density, every seed
#   rigl    RigL at that same density, every seed
# The settings are bench/settings/lm.json. The training is cut far below what a language model wants (MAX_TRAIN
# windows, EPOCHS epochs) so that the whole benchmark fits in about an hour on 2 CPU cores; the report says so.
# bench/lm.py then scores every PWMPR run against the sweep (pwmpr.discovery, as for classifiers) and writes the
# report and its plot (accuracy and perplexity against density).
#
#   bash bench/lm.sh                                                      # the benchmark (about an hour, 2 cores)
#   SEEDS=0 SEED_DENSITIES=0.1 MAX_TRAIN=32 EPOCHS=1 DENSITIES=0.1,1 OUT=/tmp/lm RESULTS=/tmp/lm/lm.md \
#     bash bench/lm.sh                                                    # smoke test, a few minutes
#
# Finished runs (those with a summary.json) are kept and started ones resumed, so an interrupted benchmark
# continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

settings=$(python3 bench/settings.py lm)  # the published settings: bench/settings/lm.json
eval "$settings"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # JOBS single-threaded processes use the cores better than one wide one
mkdir -p "$OUT"
start=$(date +%s)
command="OUT=$OUT RESULTS=$RESULTS SEEDS=\"$SEEDS\" SEED_DENSITIES=\"$SEED_DENSITIES\" JOBS=$JOBS \
MAX_TRAIN=$MAX_TRAIN BATCH=$BATCH LR=$LR PHASE_EPOCHS=$PHASE_EPOCHS EPOCHS=$EPOCHS DENSITIES=$DENSITIES FINAL_INIT=$FINAL_INIT PLATEAU_WINDOW=$PLATEAU_WINDOW GROWTH=$GROWTH CHANCE_GUARD=$CHANCE_GUARD bash bench/lm.sh"
echo "bench/lm.sh: $command"

source bench/_jobs.sh
common="--data pydoc-text --model gpt-mini --device cpu -q --max-train $MAX_TRAIN --batch-size $BATCH --optimizer adamw \
--lr $LR"
runs="$common --no-tau-core"  # a sweep never measures the tau-core
seeds_csv=$(echo $SEEDS | tr ' ' ',')
if [ ! -f "$OUT/sweep/summary.json" ] || ! python3 -c "import json,sys; sys.exit(not json.load(open('$OUT/sweep/summary.json'))['complete'])"; then
  if [ -f "$OUT/sweep/sweep.json" ]; then
    echo "$OUT/sweep sweep --resume $OUT/sweep -q" >> "$jobs_file"
  else
    echo "$OUT/sweep sweep $common --densities $DENSITIES --seeds $seeds_csv --epochs $EPOCHS --out $OUT/sweep" \
      >> "$jobs_file"
  fi
fi
for sd in $SEED_DENSITIES; do
  for s in $SEEDS; do
    add "$OUT/pwmpr-sd$sd-s$s" grow grow $runs --seed-density "$sd" --phase-epochs "$PHASE_EPOCHS" \
        --final-epochs "$EPOCHS" --final-init "$FINAL_INIT" ${PLATEAU_WINDOW:+"--$PLATEAU_WINDOW"} ${CHANCE_GUARD:+"--$CHANCE_GUARD"} --growth "$GROWTH" --seed "$s" --force \
        --out "$OUT/pwmpr-sd$sd-s$s"
  done
done
run_jobs

for sd in $SEED_DENSITIES; do  # the baselines at PWMPR's mean discovered density from this seed density
  density=$(python3 - "$OUT" "$sd" $SEEDS <<'PY'
import json, statistics, sys
out, sd, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"{statistics.fmean(json.load(open(f'{out}/pwmpr-sd{sd}-s{s}/summary.json'))['discovered_density'] for s in seeds):.4f}")
PY
)
  echo "seed density $sd: one-shot PHEW and RigL at PWMPR's mean discovered density $density"
  for s in $SEEDS; do
    add "$OUT/phew-sd$sd-s$s" "baseline oneshot" baseline oneshot --method phew --density "$density" \
        --epochs "$EPOCHS" $runs --seed "$s" --force --out "$OUT/phew-sd$sd-s$s"
    add "$OUT/rigl-sd$sd-s$s" "baseline rigl" baseline rigl --density "$density" --epochs "$EPOCHS" $runs \
        --seed "$s" --force --out "$OUT/rigl-sd$sd-s$s"
  done
done
run_jobs
elapsed=$(( $(date +%s) - start ))
echo "$elapsed" > "$OUT/elapsed_s"  # read by bench/lm.py when it is rerun on these runs
python3 bench/lm.py --out "$OUT" --results "$RESULTS" --command "$command" --elapsed "$elapsed"
