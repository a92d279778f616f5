#!/usr/bin/env bash
# bench/attention.sh: growth rules for attention's query and key weights, where PWMP is blind.
#
# On the small ViT (vit-mini: dim 64, depth 4, 4 heads, 4x4 patches on 28x28) and mnist5k, 3 seeds, one seed
# density, PWMPR grows with each growth rule:
#   pwmp              PWMP alone (uniform attention: q and k never grow after the PHEW seed)
#   pwmp-attn         PWMP through the tangent of the real attention
#   pwmp-qk-gradient  PWMP, q/k by |dL/dw| (RigL)
#   pwmp-qk-head      PWMP, q/k by head importance (Michel et al. 2019)
#   pwmp-qk-random    PWMP, q/k drawn uniformly (the control)
# (docs/method.md, "Attention: growing q and k"). Training: AdamW (lr 1e-3, weight decay 0.05) on batches of 32,
# because vit-mini hardly learns in a few epochs of pwmpr's default SGD on 3,600 digits (at any lr from 0.01 to 0.1,
# dense); 3-epoch phases, 15 final epochs and at most 12 phases keep the benchmark near an hour on
# 2 cores. Everything else is pwmpr grow's defaults (the default stop rule). bench/attention.py then reads the run
# folders and writes bench/results/attention.md (discovered density, final test accuracy, cost, share of q/k among
# the grown edges, a verdict paired by seed) and bench/results/attention.png (accuracy-density curves).
#
#   bash bench/attention.sh        # the benchmark (15 runs, about an hour with JOBS=2 on a quiet 2-core machine)
#   SEEDS=0 RULES="pwmp pwmp-attn" DATA=digits PHASE_EPOCHS=1 EPOCHS=1 MAX_PHASES=2 \
#     OUT=/tmp/attn RESULTS=/tmp/attn/attention.md bash bench/attention.sh     # smoke test, a minute or two
#
# Finished runs (those with a summary.json) are kept and started ones resumed, so an interrupted benchmark
# continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

settings=$(python3 bench/settings.py attention)  # the published settings: bench/settings/attention.json
eval "$settings"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # JOBS single-threaded processes use the cores better than one wide one
mkdir -p "$OUT"
start=$(date +%s)
command="OUT=$OUT DATA=$DATA MODEL=$MODEL SEEDS=\"$SEEDS\" SEED_DENSITY=$SEED_DENSITY RULES=\"$RULES\" JOBS=$JOBS \
PHASE_EPOCHS=$PHASE_EPOCHS EPOCHS=$EPOCHS MAX_PHASES=$MAX_PHASES TRAIN=\"$TRAIN\" EXTRA=\"$EXTRA\" FINAL_INIT=$FINAL_INIT PLATEAU_WINDOW=$PLATEAU_WINDOW CHANCE_GUARD=$CHANCE_GUARD STOP=\"$STOP\" bash bench/attention.sh"
echo "bench/attention.sh: $command"

source bench/_jobs.sh
for s in $SEEDS; do
  for rule in $RULES; do
    dir="$OUT/$DATA-$MODEL/$rule-sd$SEED_DENSITY-s$s"
    add "$dir" grow grow --data "$DATA" --model "$MODEL" --device cpu -q --no-tau-core --seed-density "$SEED_DENSITY" \
        --growth "$rule" --phase-epochs "$PHASE_EPOCHS" --final-epochs "$EPOCHS" --final-init "$FINAL_INIT" ${PLATEAU_WINDOW:+"--$PLATEAU_WINDOW"} ${CHANCE_GUARD:+"--$CHANCE_GUARD"} $STOP --max-phases "$MAX_PHASES" \
        --seed "$s" $TRAIN $EXTRA --force --out "$dir"
  done
done
run_jobs
elapsed=$(( $(date +%s) - start ))
python3 bench/attention.py --out "$OUT" --results "$RESULTS" --command "$command" --elapsed "$elapsed"
