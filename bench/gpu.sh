#!/usr/bin/env bash
# The prepared GPU benchmark: writes bench/results/gpu.md (see bench/gpu.py for what it measures).
#   bash bench/gpu.sh                 # on a GPU machine, about 8 minutes; stopped after 480 s at the latest
#   bash bench/gpu.sh --device cpu    # dry run on a CPU (tiny sizes) -> bench/results/gpu-smoke.md
# Extra arguments go to bench/gpu.py (e.g. --out PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
smoke=()
if [ "$device" != "cuda" ] && [ "${device#cuda:}" = "$device" ]; then smoke=(--smoke); fi
exec timeout 480 python3 bench/gpu.py --device "$device" "${smoke[@]}" "${args[@]}"
