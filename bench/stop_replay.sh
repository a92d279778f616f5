#!/usr/bin/env bash
# bench/stop_replay.sh: where each stop rule would stop, replayed on whole growth trajectories.
#
# A stop rule reads only the points of the phases so far, and growth up to a phase does not depend on the rule, so
# one run grown with --stop none to density 1 holds every rule's decision. This script grows those trajectories
# (the pairs, seeds and seed densities of bench/discovery.sh) and bench/stop_replay.py replays every rule of
# bench/settings/stop_replay.json on them through pwmpr's own stop sequence and cost guard, scoring where each
# stops against the knee of bench/discovery.sh's sweeps (run that first). Final training is not replayed, so the
# report gives densities and costs, not test accuracies: bench/discovery.sh measures those for the default.
#
#   bash bench/stop_replay.sh      # about 15 minutes on 2 cores, after bench/discovery.sh
#   SETTINGS=stop_replay-heldout bash bench/stop_replay.sh   # the held-out pairs, after SETTINGS=discovery-heldout
#                                                            # bash bench/discovery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SETTINGS=${SETTINGS:-stop_replay}  # stop_replay-heldout: bench/discovery.sh's held-out pairs
eval "$(python3 bench/settings.py "$SETTINGS")"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export PYTHONPATH="$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"  # models a pair names as discovery_models:NAME
[ -z "$DATA_PREP" ] || eval "$DATA_PREP"  # data a pair reads from a file, made before the runs
mkdir -p "$OUT"
command="SETTINGS=$SETTINGS OUT=$OUT RESULTS=$RESULTS RULES=$RULES GROWTH=$GROWTH SWEEPS=$SWEEPS PAIRS=\"$PAIRS\" SEEDS=\"$SEEDS\" SEED_DENSITIES=\"$SEED_DENSITIES\" JOBS=$JOBS \
PHASE_EPOCHS=$PHASE_EPOCHS FINAL_EPOCHS=$FINAL_EPOCHS MAX_TRAIN=$MAX_TRAIN bash bench/stop_replay.sh"
echo "bench/stop_replay.sh: $command"
source bench/_jobs.sh
check_pairs $PAIRS
for pair in $PAIRS; do
  pair_parts "$pair"
  for sd in $SEED_DENSITIES; do
    for s in $SEEDS; do
      dir="$OUT/$label-sd$sd-s$s"
      add "$dir" "grow --trust-code" grow --data "$data" --model "$model" --device cpu -q --no-tau-core --max-train "$MAX_TRAIN" \
          --seed-density "$sd" --phase-epochs "$PHASE_EPOCHS" --final-epochs 1 --stop none --plateau-tol 0 \
          --max-cost 0 --growth "$GROWTH" --seed "$s" --force --out "$dir"
    done
  done
done
run_jobs
python3 bench/stop_replay.py --out "$OUT" --sweeps "$SWEEPS" --results "$RESULTS" --rules "$RULES" --final-epochs "$FINAL_EPOCHS" \
  --phase-epochs "$PHASE_EPOCHS" --command "$command"
