# bench/_jobs.sh: the resumable job queue the bench shell scripts share (sourced, not run).
#
#   source bench/_jobs.sh             # makes $jobs_file (removed on exit)
#   add DIR RESUME_COMMAND ARGS...    # queue a run: skipped when finished, resumed when started, else started
#   run_jobs                          # run the queue, $JOBS at a time, each run's log beside its folder; empty it
#   pair_parts PAIR                   # a benchmark's data/model pair: sets $data, $model and $label
jobs_file=$(mktemp)
trap 'rm -f "$jobs_file"' EXIT

add() {
  local dir=$1 resume=$2; shift 2
  if [ -f "$dir/summary.json" ]; then return; fi
  if compgen -G "$dir/checkpoints/phase-*.safetensors" > /dev/null; then
    echo "$dir $resume --resume $dir -q" >> "$jobs_file"
  else
    echo "$dir $*" >> "$jobs_file"
  fi
}

run_jobs() {
  xargs -r -P "$JOBS" -L 1 sh -c 'dir=$0; mkdir -p "$(dirname "$dir")"; echo "  start $dir"; \
    pwmpr "$@" > "$dir.log" 2>&1 && echo "  done  $dir" || { echo "  FAILED $dir (see $dir.log)"; exit 255; }' \
    < "$jobs_file"
  : > "$jobs_file"
}

pair_parts() {
  # DATA:MODEL for registered names, DATA::MODEL when either holds a colon (npz:PATH, module:function); $label is
  # the pair's folder name: the data set's name (an npz file's stem) and the model's (a factory's function name)
  if [[ $1 == *::* ]]; then data=${1%%::*}; model=${1#*::}; else data=${1%%:*}; model=${1#*:}; fi
  label="$(basename "${data#*:}" .npz)-${model##*:}"
}
