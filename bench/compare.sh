#!/usr/bin/env bash
# bench/compare.sh: the whole PWMPR comparison on real MNIST digits (mnist5k, offline), several seeds, 2 CPU cores.
#
# PWMPR (sampled PWMP growth) and its growth ablations (random, pwmp-topk, gradient), the dense baseline, IMP in
# its three variants (lr-rewind = IMP-C by default, weight rewind, continue) and one-shot PHEW at PWMPR's mean
# discovered density, all LeNet-300-100 (`mlp`) with the same trainer, data and cost accounting; then
# `pwmpr compare` writes the table, the claim checks and the two plots into $OUT.
#
#   NAME=compare-seed01 bash bench/compare.sh  # 3 seeds, 2 parallel jobs; NAME publishes into bench/results
#   NAME=compare-seed05 OUT=bench/compare-seed05 SEED_DENSITY=0.05 bash bench/compare.sh
#   SEEDS="0 1 2 3 4" JOBS=2 bash bench/compare.sh
#   EPOCHS=2 PHASE_EPOCHS=1 LEVELS=2 SEEDS=0 OUT=/tmp/cmp bash bench/compare.sh   # smoke test, ~2 min
#
# Finished runs (those with a summary.json) are kept, so an interrupted benchmark continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

settings=$(python3 bench/settings.py compare)  # the published settings: bench/settings/compare.json
eval "$settings"
COMMON="--data mnist5k --model mlp --batch-size 128 --val-fraction 0.2 --device cpu --force -q"
RUNS="$OUT/runs"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # JOBS single-threaded processes use the cores better than one wide one
mkdir -p "$RUNS"
start=$(date +%s)
echo "bench/compare.sh: OUT=$OUT SEEDS='$SEEDS' JOBS=$JOBS EPOCHS=$EPOCHS PHASE_EPOCHS=$PHASE_EPOCHS" \
     "SEED_DENSITY=$SEED_DENSITY LEVELS=$LEVELS REWIND_STEP=$REWIND_STEP FINAL_INIT=$FINAL_INIT PLATEAU_WINDOW=$PLATEAU_WINDOW CHANCE_GUARD=$CHANCE_GUARD STOP='$STOP'"

# One line per run: "<run folder> <pwmpr arguments>"; a run whose summary.json exists is skipped.
jobs_file=$(mktemp)
trap 'rm -f "$jobs_file"' EXIT
add() { local dir=$1; shift; [ -f "$dir/summary.json" ] || echo "$dir $*" >> "$jobs_file"; }
grow="grow $COMMON --phase-epochs $PHASE_EPOCHS --final-epochs $EPOCHS --seed-density $SEED_DENSITY --final-init $FINAL_INIT ${PLATEAU_WINDOW:+--$PLATEAU_WINDOW} ${CHANCE_GUARD:+--$CHANCE_GUARD} $STOP"
for s in $SEEDS; do  # longest jobs first, so the parallel queue drains evenly
  add "$RUNS/imp-lr-rewind-s$s" baseline imp --variant lr-rewind --epochs "$EPOCHS" --levels "$LEVELS" $COMMON --seed "$s"
  add "$RUNS/imp-rewind-s$s" baseline imp --variant rewind --rewind-step "$REWIND_STEP" --epochs "$EPOCHS" \
      --levels "$LEVELS" $COMMON --seed "$s"
done
for s in $SEEDS; do
  add "$RUNS/imp-continue-s$s" baseline imp --variant continue --epochs "$EPOCHS" --levels "$LEVELS" $COMMON --seed "$s"
  for rule in pwmp random pwmp-topk gradient; do
    add "$RUNS/pwmpr-$rule-s$s" $grow --growth "$rule" --seed "$s"
  done
  add "$RUNS/dense-s$s" baseline dense --epochs "$EPOCHS" $COMMON --seed "$s"
done
run_all() {
  # Each line: folder, then the pwmpr arguments; the log of each run lands beside it.
  xargs -r -P "$JOBS" -L 1 sh -c 'dir=$0; echo "  start $dir"; pwmpr "$@" --out "$dir" > "$dir.log" 2>&1 \
    && echo "  done  $dir" || { echo "  FAILED $dir (see $dir.log)"; exit 255; }' < "$jobs_file"
}
run_all

# One-shot PHEW at PWMPR's mean discovered density (one density for all seeds, so they form one group).
density=$(python - "$RUNS" $SEEDS <<'PY'
import json, statistics, sys
runs, seeds = sys.argv[1], sys.argv[2:]
print(f"{statistics.fmean(json.load(open(f'{runs}/pwmpr-pwmp-s{s}/summary.json'))['discovered_density'] for s in seeds):.4f}")
PY
)
echo "one-shot PHEW at PWMPR's mean discovered density $density"
: > "$jobs_file"
for s in $SEEDS; do
  add "$RUNS/oneshot-phew-s$s" baseline oneshot --method phew --density "$density" --epochs "$EPOCHS" $COMMON --seed "$s"
done
run_all

elapsed=$(( $(date +%s) - start ))
pwmpr compare "$RUNS"/*/ --out "$OUT"
cat > "$OUT/command.txt" <<TXT
$(cd "$OUT/../.." 2>/dev/null && pwd)\$ OUT=$OUT SEEDS="$SEEDS" JOBS=$JOBS EPOCHS=$EPOCHS PHASE_EPOCHS=$PHASE_EPOCHS SEED_DENSITY=$SEED_DENSITY LEVELS=$LEVELS REWIND_STEP=$REWIND_STEP bash bench/compare.sh
runs: $RUNS (one folder per run, with its log beside it); training took ${elapsed}s wall on $(nproc --all) cores
TXT
command="OUT=$OUT SEEDS=\"$SEEDS\" JOBS=$JOBS EPOCHS=$EPOCHS PHASE_EPOCHS=$PHASE_EPOCHS SEED_DENSITY=$SEED_DENSITY LEVELS=$LEVELS REWIND_STEP=$REWIND_STEP bash bench/compare.sh"
if [ -n "${NAME:-}" ]; then  # NAME=compare-seed01: publish into bench/results, bench/RESULTS.md and README.md
  python3 bench/compare_results.py --out "$OUT" --name "$NAME" --command "$command" --elapsed "$elapsed" \
    --jobs "$JOBS" --seed-density "$SEED_DENSITY"
fi
echo "benchmark: ${elapsed}s of runs; table, claims and plots in $OUT (compare.md, compare.csv, acc_vs_density.png, acc_vs_cost.png)"
echo "command: OUT=$OUT SEEDS=\"$SEEDS\" JOBS=$JOBS EPOCHS=$EPOCHS PHASE_EPOCHS=$PHASE_EPOCHS SEED_DENSITY=$SEED_DENSITY LEVELS=$LEVELS REWIND_STEP=$REWIND_STEP bash bench/compare.sh"
