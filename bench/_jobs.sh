# bench/_jobs.sh: the resumable job queue the bench shell scripts share (sourced, not run).
#
#   source bench/_jobs.sh             # makes $jobs_file (removed on exit)
#   add DIR RESUME_COMMAND ARGS...    # queue a run: skipped when finished, resumed when started, else started
#   run_jobs                          # run the queue, $JOBS at a time, each run's log beside its folder; empty it
#   pair_parts PAIR                   # a benchmark's data/model pair: sets $data, $model and $label
#   check_pairs PAIR...               # every pair parses and has a folder of its own, else exit 2
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
  if [[ $1 == *::* ]]; then
    data=${1%%::*}; model=${1#*::}
  elif [[ $1 == *:*:* ]]; then
    echo "error: pair '$1' has more than one ':'; write DATA::MODEL when the data or the model holds a colon" >&2
    return 2
  else
    data=${1%%:*}; model=${1#*:}
  fi
  if [ -z "$data" ] || [ -z "$model" ]; then
    echo "error: pair '$1' must name a data set and a model (DATA:MODEL or DATA::MODEL)" >&2
    return 2
  fi
  label="$(basename "${data#*:}" .npz)-${model##*:}"
}

check_pairs() {  # check_pairs PAIR...: every pair parses, and no two share a folder name; exits 2 otherwise
  local pair seen=" "
  for pair in "$@"; do
    pair_parts "$pair" || exit 2
    if [[ $seen == *" $label "* ]]; then
      echo "error: two pairs would share the folder '$label' (the data's name and the model's function name)" >&2
      exit 2
    fi
    seen+="$label "
  done
}
