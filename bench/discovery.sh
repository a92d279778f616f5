#!/usr/bin/env bash
# bench/discovery.sh: how close density discovery lands to the true knee, rule by rule, on real offline data.
#
# For every data/model pair: a sweep (one-shot PHEW masks at 0.01 .. 1 by x2, 3 seeds: the ground-truth curve and
# its knee), IMP (lr-rewind, seed 0: the cost of reaching a density by pruning), and PWMPR from seed densities 0.01
# and 0.05 with 3 seeds under four stop rules:
#   paper-today  --stop paper-unbounded --plateau-tol 0.01   (pwmpr 0.1's default)
#   paper-fixed  --stop paper --plateau-tol 0.01             (the paper's fit, bounded and checked)
#   gain         --stop gain --plateau-tol 0                 (the uncertainty-aware rule alone)
#   gain-plateau --stop gain --plateau-tol 0.01              (the same with pwmpr 0.1's plateau fallback)
# Everything else is pwmpr grow's defaults (10 epochs per phase, 30 final epochs). bench/discovery.py then scores
# every PWMPR run against its sweep (pwmpr.discovery) and writes bench/results/discovery.md.
#
#   bash bench/discovery.sh                                   # the benchmark (about 1-2 hours on 2 cores)
#   PAIRS="digits:mlp" SEEDS=0 SEED_DENSITIES=0.05 PHASE_EPOCHS=1 EPOCHS=2 DENSITIES=0.05,1 IMP_LEVELS=2 \
#     OUT=/tmp/disc RESULTS=/tmp/disc/discovery.md bash bench/discovery.sh   # smoke test, a few minutes
#
# Finished runs (those with a summary.json) are kept and started ones resumed, so an interrupted benchmark
# continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench/out/discovery}
RESULTS=${RESULTS:-bench/results/discovery.md}
PAIRS=${PAIRS:-"mnist5k:mlp digits:mlp digits:cnn"}
SEEDS=${SEEDS:-"0 1 2"}
SEED_DENSITIES=${SEED_DENSITIES:-"0.01 0.05"}
RULES=${RULES:-"gain gain-plateau paper-fixed paper-today"}
JOBS=${JOBS:-2}
PHASE_EPOCHS=${PHASE_EPOCHS:-10}
EPOCHS=${EPOCHS:-30}                 # PWMPR's final training, each sweep point, each IMP level
DENSITIES=${DENSITIES:-0.01,0.02,0.04,0.08,0.16,0.32,0.64,1}
IMP_LEVELS=${IMP_LEVELS:-14}         # 0.8^14 = 0.044; below that IMP's cost is reported as a lower bound
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # JOBS single-threaded processes use the cores better than one wide one
mkdir -p "$OUT"
start=$(date +%s)
command="OUT=$OUT PAIRS=\"$PAIRS\" SEEDS=\"$SEEDS\" SEED_DENSITIES=\"$SEED_DENSITIES\" RULES=\"$RULES\" JOBS=$JOBS \
PHASE_EPOCHS=$PHASE_EPOCHS EPOCHS=$EPOCHS DENSITIES=$DENSITIES IMP_LEVELS=$IMP_LEVELS bash bench/discovery.sh"
echo "bench/discovery.sh: $command"

rule_flags() {
  case "$1" in
    gain) echo "--stop gain --plateau-tol 0" ;;
    gain-plateau) echo "--stop gain --plateau-tol 0.01" ;;
    paper-fixed) echo "--stop paper --plateau-tol 0.01" ;;
    paper-today) echo "--stop paper-unbounded --plateau-tol 0.01" ;;
    *) echo "bench/discovery.sh: unknown rule '$1'" >&2; exit 2 ;;
  esac
}

source bench/_jobs.sh
seeds_csv=$(echo $SEEDS | tr ' ' ',')
for pair in $PAIRS; do  # the longest jobs first, so the parallel queue drains evenly
  data=${pair%%:*}; model=${pair##*:}
  common="--data $data --model $model --device cpu -q"
  if [ ! -f "$OUT/$data-$model/sweep/summary.json" ] || ! python3 -c "import json,sys; sys.exit(not json.load(open('$OUT/$data-$model/sweep/summary.json'))['complete'])"; then
    if [ -f "$OUT/$data-$model/sweep/sweep.json" ]; then
      echo "$OUT/$data-$model/sweep sweep --resume $OUT/$data-$model/sweep -q" >> "$jobs_file"
    else
      echo "$OUT/$data-$model/sweep sweep $common --densities $DENSITIES --seeds $seeds_csv --epochs $EPOCHS" \
           "--out $OUT/$data-$model/sweep" >> "$jobs_file"
    fi
  fi
  add "$OUT/$data-$model/imp-s0" "baseline imp" baseline imp --variant lr-rewind --epochs "$EPOCHS" --levels "$IMP_LEVELS" \
      $common --no-tau-core --seed 0 --force --out "$OUT/$data-$model/imp-s0"
done
for pair in $PAIRS; do
  data=${pair%%:*}; model=${pair##*:}
  for sd in $SEED_DENSITIES; do
    for s in $SEEDS; do
      for rule in $RULES; do
        dir="$OUT/$data-$model/pwmpr-$rule-sd$sd-s$s"
        add "$dir" grow grow --data "$data" --model "$model" --device cpu -q --no-tau-core --seed-density "$sd" \
            --phase-epochs "$PHASE_EPOCHS" --final-epochs "$EPOCHS" $(rule_flags "$rule") --seed "$s" --force \
            --out "$dir"
      done
    done
  done
done
run_jobs
elapsed=$(( $(date +%s) - start ))
python3 bench/discovery.py --out "$OUT" --results "$RESULTS" --command "$command" --elapsed "$elapsed"
