#!/usr/bin/env bash
# The Python install steps of the pwmpr Docker image, kept here so CI runs the very same steps.
#
# Usage (from anywhere; it installs the repository it lives in):
#   docker/install.sh gpu              the image: torch 2.13 + torchvision 0.28 (CUDA 13 builds from PyPI),
#                                      pwmpr with the `gpu` extra (onnxruntime-gpu), then the checks
#   docker/install.sh cpu              the same with the `cpu` extra (onnxruntime): what CI installs
#   docker/install.sh --dry-run FLAVOUR   print the install commands, run nothing
#   docker/install.sh --check FLAVOUR     install nothing; check that this environment is what the install gives
# Environment: PYTHON (default python3) is the interpreter to install into; PWMPR_EXTRAS adds extras
# (e.g. PWMPR_EXTRAS=test). Exactly one onnxruntime flavour per environment: the CPU package shadows the GPU one.
set -euo pipefail

TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0

mode=install
flavour=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) mode=dry-run ;;
    --check) mode=check ;;
    cpu|gpu) flavour=$arg ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument '$arg' (want cpu or gpu, optionally --dry-run or --check)" >&2; exit 2 ;;
  esac
done
if [ -z "$flavour" ]; then
  echo "install.sh: say which onnxruntime flavour: cpu or gpu" >&2
  exit 2
fi

PYTHON=${PYTHON:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
extras=$flavour${PWMPR_EXTRAS:+,$PWMPR_EXTRAS}
if [ "$flavour" = gpu ]; then ort=onnxruntime-gpu; other=onnxruntime; else ort=onnxruntime; other=onnxruntime-gpu; fi

run() {
  echo "+ $*"
  if [ "$mode" = install ]; then "$@"; fi
}

# 1. torch first, pinned: unpinned, pip may pick a torch that does not match the CUDA of onnxruntime-gpu.
run "$PYTHON" -m pip install --no-cache-dir "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
# 2. pwmpr with exactly one onnxruntime flavour.
run "$PYTHON" -m pip install --no-cache-dir "$repo[$extras]"

[ "$mode" = dry-run ] && exit 0

# 3. Checks (after an install, and in --check mode): versions, one onnxruntime, the CLI, the providers.
echo "+ checking the environment ($flavour)"
if "$PYTHON" -m pip show "$other" >/dev/null 2>&1; then
  echo "install.sh: $other is installed beside $ort; uninstall it (the CPU package shadows the GPU one)" >&2
  exit 1
fi
"$PYTHON" -m pip show "$ort" >/dev/null 2>&1 || { echo "install.sh: $ort is not installed" >&2; exit 1; }
cd /  # import the installed pwmpr, not the source folders of the current directory
FLAVOUR=$flavour TORCH_VERSION=$TORCH_VERSION "$PYTHON" - <<'PY'
import os
import sys

import onnxruntime as ort
import torch

import pwmpr
from pwmpr.cli.app import app  # noqa: F401  (the CLI and its commands import)
from pwmpr.export import onnx_graph, packing, pipeline, validate  # noqa: F401

flavour, want = os.environ["FLAVOUR"], os.environ["TORCH_VERSION"]
problems = []
if torch.__version__.split("+")[0] != want:
    problems.append(f"torch {torch.__version__}, want {want}")
providers = ort.get_available_providers()
if flavour == "gpu" and "CUDAExecutionProvider" not in providers:
    problems.append(f"onnxruntime lists no CUDA provider ({providers})")
print(f"pwmpr {pwmpr.__version__} · torch {torch.__version__} (CUDA build {torch.version.cuda}) · "
      f"onnxruntime {ort.__version__} · providers {', '.join(providers)}")
if problems:
    sys.exit("install.sh: " + "; ".join(problems))
PY
"$PYTHON" -m pwmpr --help >/dev/null
echo "install.sh: ok ($flavour)"
