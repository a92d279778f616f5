#!/usr/bin/env bash
# bench/discovery.sh: how close density discovery lands to the true knee, and at what cost, on data it was not
# tuned on.
#
# For every data/model pair: a sweep (one-shot PHEW masks at 0.01 .. 1 by x2, 3 seeds: the ground-truth curve and
# its knee; with FANIN_SWEEP=1 the same sweep again with --init-scale fan-in, shown beside it and scored against
# nothing), IMP (lr-rewind, seed 0: the cost of reaching a density by pruning), and PWMPR from seed densities 0.01
# and 0.05 with 3 seeds in each VARIANT. The settings and each variant's flags are bench/settings/$SETTINGS.json;
# everything else is pwmpr grow's defaults (the plateau rule at half a point per doubling, the cost guard at 1.5
# dense runs; final training from 0.4 x the grown weights + 0.1 x the initial ones):
#   explore    growth that can recruit units the seed missed (pwmp-explore: the default)
#   explore-reinit  explore's growth, final training from the initial weights: with explore, what choosing the
#              start per run by validation would give (the report's "Choosing the start" table)
#   explore-fanin  explore with every unit's kept seed weights scaled to its kept fan-in (--init-scale fan-in)
#   pwmp       PWMP growth alone, the paper's rule, everything else the default
#   resolved   pwmp with the plateau test's window widened to what the validation set resolves (--plateau-resolve)
#   continue   pwmp, final training from the grown weights (the default start before shrink-perturb)
#   reinit     pwmp, the grown mask from the model's initial weights
#   rewind     pwmp, seed edges at their initial values, grown ones at zero
#   gain-guarded  the default before the plateau rule: the gain rule with the one-point plateau fallback, continue
# Older stop settings stay available as variants: no-guard, gain, gain-plateau, paper-fixed, paper-today.
# bench/results/discovery-gain-rule.md keeps the same benchmark as it was written under the previous default stop.
# Stability: the default's runs of seed 0 run once more with 2 threads (variant default-2threads), so the report
# shows whether the discovered density moves with the summation order.
# The pairs: mnist5k and digits (real digits; 400 and 144 validation samples) and teacher (labels from a fixed
# random sparse teacher network, 3,200 validation samples). Every run trains on at most MAX_TRAIN samples.
# bench/discovery.py then scores every PWMPR run against its sweep (pwmpr.discovery) and writes
# bench/results/discovery.md.
#
# Held out: SETTINGS=discovery-heldout runs the same benchmark on three pairs fixed before they first ran, when no
# rule or default had been chosen on them (bench/settings/discovery-heldout.json: a user's MLP calling torch.relu on
# mnist5k, bench/discovery_models.py; the registered cnn on digits; a synthetic tabular set written as npz by
# bench/discovery_data.py) into bench/results/discovery-heldout.md; the defaults were then chosen over it and this
# benchmark together. SETTINGS=discovery-heldout2 checks them on a third set, fixed after that choice.
# SETTINGS=discovery-warmup runs the nine pairs of all three with fresh sweeps: the default against the default
# with a learning-rate warm-up at every restart (--warmup-epochs 1) into bench/results/discovery-warmup.md.
# A pair is DATA:MODEL, or DATA::MODEL where either holds a colon.
#
#   bash bench/discovery.sh                                   # the benchmark (about 1.5 hours on 2 cores)
#   SETTINGS=discovery-heldout bash bench/discovery.sh        # the held-out pairs (about 30 minutes on 2 cores)
#   PAIRS="digits:mlp" SEEDS=0 SEED_DENSITIES=0.05 PHASE_EPOCHS=1 EPOCHS=2 DENSITIES=0.05,1 IMP_LEVELS=2 \
#     VARIANTS=continue THREAD_RUNS=0 OUT=/tmp/disc RESULTS=/tmp/disc/discovery.md bash bench/discovery.sh  # smoke
#
# Finished runs (those with a summary.json) are kept and started ones resumed, so an interrupted benchmark
# continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

SETTINGS=${SETTINGS:-discovery}  # discovery-heldout: the held-out pairs (bench/settings/discovery-heldout.json)
settings=$(python3 bench/settings.py "$SETTINGS")  # the published settings: bench/settings/$SETTINGS.json
eval "$settings"
export PYTHONPATH="$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"  # models a pair names as discovery_models:NAME
[ -z "$DATA_PREP" ] || eval "$DATA_PREP"  # data a pair reads from a file, made before the runs
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # JOBS single-threaded processes use the cores better than one wide one
mkdir -p "$OUT"
start=$(date +%s)
command="SETTINGS=$SETTINGS OUT=$OUT RESULTS=$RESULTS PAIRS=\"$PAIRS\" SEEDS=\"$SEEDS\" SEED_DENSITIES=\"$SEED_DENSITIES\" VARIANTS=\"$VARIANTS\" \
THREAD_RUNS=$THREAD_RUNS JOBS=$JOBS PHASE_EPOCHS=$PHASE_EPOCHS EPOCHS=$EPOCHS DENSITIES=$DENSITIES \
IMP_LEVELS=$IMP_LEVELS MAX_TRAIN=$MAX_TRAIN FANIN_SWEEP=$FANIN_SWEEP bash bench/discovery.sh"
echo "bench/discovery.sh: $command"

variant_flags() {  # the flags of a variant, from bench/settings/$SETTINGS.json
  local var="VARIANT_${1//-/_}"
  [ -n "${!var+x}" ] || { echo "bench/discovery.sh: unknown variant '$1'" >&2; exit 2; }
  echo "${!var}"
}

source bench/_jobs.sh
check_pairs $PAIRS
seeds_csv=$(echo $SEEDS | tr ' ' ',')
sweep_job() {  # sweep_job DIR [FLAGS...]: queue the sweep in DIR (with $common, the grid and FLAGS) unless complete
  local dir=$1; shift
  if [ -f "$dir/summary.json" ] && python3 -c "import json,sys; sys.exit(not json.load(open('$dir/summary.json'))['complete'])"; then
    return
  fi
  if [ -f "$dir/sweep.json" ]; then
    echo "$dir sweep --resume $dir --trust-code -q" >> "$jobs_file"
  else
    echo "$dir sweep $common --densities $DENSITIES --seeds $seeds_csv --epochs $EPOCHS $* --out $dir" >> "$jobs_file"
  fi
}
for pair in $PAIRS; do  # the longest jobs first, so the parallel queue drains evenly
  pair_parts "$pair"
  common="--data $data --model $model --device cpu -q --max-train $MAX_TRAIN"
  sweep_job "$OUT/$label/sweep"
  [ "$FANIN_SWEEP" != 1 ] || sweep_job "$OUT/$label/sweep-fanin" --init-scale fan-in
  add "$OUT/$label/imp-s0" "baseline imp --trust-code" baseline imp --variant lr-rewind --epochs "$EPOCHS" \
      --levels "$IMP_LEVELS" $common --no-tau-core --seed 0 --force --out "$OUT/$label/imp-s0"
done
grow_run() {  # grow_run DIR VARIANT DATA MODEL SEED_DENSITY SEED
  add "$1" "grow --trust-code" grow --data "$3" --model "$4" --device cpu -q --no-tau-core --max-train "$MAX_TRAIN" \
      --seed-density "$5" --phase-epochs "$PHASE_EPOCHS" --final-epochs "$EPOCHS" $(variant_flags "$2") --seed "$6" \
      --force --out "$1"
}
for pair in $PAIRS; do
  pair_parts "$pair"
  for sd in $SEED_DENSITIES; do
    for s in $SEEDS; do
      for variant in $VARIANTS; do
        grow_run "$OUT/$label/pwmpr-$variant-sd$sd-s$s" "$variant" "$data" "$model" "$sd" "$s"
      done
    done
  done
done
run_jobs
if [ "$THREAD_RUNS" = 1 ]; then  # one process at a time, each with both threads
  for pair in $PAIRS; do
    pair_parts "$pair"
    for sd in $SEED_DENSITIES; do
      grow_run "$OUT/$label/pwmpr-default-2threads-sd$sd-s0" default-2threads "$data" "$model" "$sd" 0
    done
  done
  OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 JOBS=1 run_jobs
fi
elapsed=$(( $(date +%s) - start ))
previous=()  # earlier results files whose runs this report's are set against (PREVIOUS, where a settings file has it)
for file in ${PREVIOUS:-}; do previous+=(--previous "$file"); done
python3 bench/discovery.py --out "$OUT" --results "$RESULTS" --command "$command" --elapsed "$elapsed" \
  ${TOGETHER_WITH:+--with "$TOGETHER_WITH"} ${previous[@]+"${previous[@]}"} \
  ${PREVIOUS_LABEL:+--previous-label "$PREVIOUS_LABEL"}
