#!/usr/bin/env bash
# bench/hybrid.sh: hybrid grow-prune PWMPR (--zeta, --shrink) against plain PWMPR, the IMP ticket at the same
# density, and RigL and SET at the same density and training budget, on real offline digits.
#
# Stage 1, for every data/model pair and seed: plain PWMPR (pwmpr grow's defaults) and hybrid PWMPR (the same with
# --zeta $ZETA --shrink). Stage 2, for every hybrid run (bench/hybrid.py plan reads its summary): IMP (lr-rewind)
# down to its final density, and RigL and SET at that density for as many epochs as the hybrid run's training
# FLOPs buy at it (equal budget). bench/hybrid.py report then writes bench/results/hybrid.md: one table per pair
# and the shrink interval of every hybrid run (knee -> smallest density that kept the accuracy).
#
#   bash bench/hybrid.sh                                      # the benchmark (several hours on 2 cores)
#   PAIRS="digits:mlp" SEEDS=0 PHASE_EPOCHS=1 EPOCHS=2 MAX_PHASES=3 SHRINK_STEPS=2 \
#     OUT=/tmp/hyb RESULTS=/tmp/hyb/hybrid.md bash bench/hybrid.sh   # smoke test, a few minutes
#
# Finished runs (those with a summary.json) are kept and started ones resumed, so an interrupted benchmark
# continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

settings=$(python3 bench/settings.py hybrid)  # the published settings: bench/settings/hybrid.json
eval "$settings"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
start=$(date +%s)
command="OUT=$OUT PAIRS=\"$PAIRS\" SEEDS=\"$SEEDS\" JOBS=$JOBS PHASE_EPOCHS=$PHASE_EPOCHS EPOCHS=$EPOCHS \
MAX_PHASES=$MAX_PHASES ZETA=$ZETA SHRINK_STEPS=$SHRINK_STEPS UPDATE_EPOCHS=$UPDATE_EPOCHS FINAL_INIT=$FINAL_INIT PLATEAU_WINDOW=$PLATEAU_WINDOW GROWTH=$GROWTH CHANCE_GUARD=$CHANCE_GUARD STOP=\"$STOP\" bash bench/hybrid.sh"
echo "bench/hybrid.sh: $command"

source bench/_jobs.sh

for pair in $PAIRS; do
  data=${pair%%:*}; model=${pair##*:}
  for s in $SEEDS; do
    common=(--data "$data" --model "$model" --device cpu -q --no-tau-core --phase-epochs "$PHASE_EPOCHS"
            --final-epochs "$EPOCHS" --final-init "$FINAL_INIT" ${PLATEAU_WINDOW:+"--$PLATEAU_WINDOW"} ${CHANCE_GUARD:+"--$CHANCE_GUARD"} --growth "$GROWTH" $STOP --max-phases "$MAX_PHASES" --seed "$s" --force)
    add "$OUT/$data-$model/plain-s$s" grow grow "${common[@]}" --out "$OUT/$data-$model/plain-s$s"
    add "$OUT/$data-$model/hybrid-s$s" grow grow "${common[@]}" --zeta "$ZETA" --shrink \
        --shrink-max-steps "$SHRINK_STEPS" --out "$OUT/$data-$model/hybrid-s$s"
  done
done
run_jobs
# Stage 2 needs each hybrid run's density and cost; a finished baseline is skipped like a finished run above.
python3 bench/hybrid.py plan --out "$OUT" --epochs "$EPOCHS" --update-epochs "$UPDATE_EPOCHS" | while read -r line; do
  [ -n "$line" ] || continue
  dir=${line%% *}; rest=${line#* }
  kind=$(echo "$rest" | cut -d' ' -f2)
  add "$dir" "baseline $kind" $rest
done
run_jobs
elapsed=$(( $(date +%s) - start ))
python3 bench/hybrid.py report --out "$OUT" --results "$RESULTS" --command "$command" --elapsed "$elapsed"
