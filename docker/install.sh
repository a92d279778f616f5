#!/usr/bin/env bash
# The Python install steps of the pwmpr Docker image, kept here so CI runs the very same steps.
#
# Usage (from anywhere; it installs the repository it lives in):
#   docker/install.sh gpu              the GPU image: torch 2.13 + torchvision 0.28 (CUDA 13 builds from PyPI),
#                                      pwmpr with the `gpu` extra (onnxruntime-gpu), then the checks
#   docker/install.sh cpu              the CPU image: torch + torchvision from PyTorch's CPU index, pwmpr with the
#                                      `cpu` extra (onnxruntime), then the checks
#   docker/install.sh --dry-run FLAVOUR   print the install commands, run nothing
#   docker/install.sh --check FLAVOUR     install nothing; check that this environment is what the install gives
#   docker/install.sh --wheels DIR FLAVOUR   build a wheelhouse in DIR (every wheel the install needs, pwmpr's
#                                      build requirements included) for an offline install with PWMPR_WHEELHOUSE=DIR
# Environment:
#   PYTHON             the interpreter to install into (default python3)
#   PWMPR_EXTRAS       more extras (e.g. PWMPR_EXTRAS=test)
#   TORCH_INDEX        the index torch and torchvision come from. Unset: https://download.pytorch.org/whl/cpu for
#                      cpu (plain PyPI's torch 2.13.0 is the CUDA build, over 2 GB with its nvidia packages), PyPI
#                      for gpu. Set but empty: pip's own configuration (what CI does where the CPU build is local).
#   PWMPR_WHEELHOUSE   install with --no-index from this folder only (offline builds); the index is then unused
# Exactly one onnxruntime flavour per environment: the CPU package shadows the GPU one.
set -euo pipefail

TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
ORT_GPU_VERSION=1.31.1  # onnxruntime-gpu built for the same CUDA major as torch: docker/cuda-stacks.json
CPU_TORCH_INDEX=https://download.pytorch.org/whl/cpu

mode=install
flavour=""
wheel_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) mode=dry-run ;;
    --check) mode=check ;;
    --wheels)
      mode=wheels
      [ $# -ge 2 ] || { echo "install.sh: --wheels needs a folder" >&2; exit 2; }
      wheel_dir=$2
      shift ;;
    cpu|gpu) flavour=$1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (want cpu or gpu, optionally --dry-run, --check or --wheels DIR)" >&2
       exit 2 ;;
  esac
  shift
done
if [ -z "$flavour" ]; then
  echo "install.sh: say which onnxruntime flavour: cpu or gpu" >&2
  exit 2
fi

PYTHON=${PYTHON:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
extras=$flavour${PWMPR_EXTRAS:+,$PWMPR_EXTRAS}
if [ "$flavour" = gpu ]; then ort=onnxruntime-gpu; other=onnxruntime; else ort=onnxruntime; other=onnxruntime-gpu; fi
ort_pin=()  # the GPU flavour pins onnxruntime-gpu to the CUDA major of its torch
[ "$flavour" = gpu ] && ort_pin=("onnxruntime-gpu==$ORT_GPU_VERSION")
if [ "$flavour" = cpu ]; then default_index=$CPU_TORCH_INDEX; else default_index=""; fi
torch_index=${TORCH_INDEX-$default_index}

# Where packages come from: a wheelhouse alone (offline), or the indexes (torch's own first when one is set).
source_args=()
torch_args=()
if [ -n "${PWMPR_WHEELHOUSE:-}" ]; then
  source_args=(--no-index --find-links "$PWMPR_WHEELHOUSE")
elif [ -n "$torch_index" ]; then
  torch_args=(--index-url "$torch_index")
fi

run() {
  echo "+ $*"
  if [ "$mode" = install ] || [ "$mode" = wheels ]; then "$@"; fi
}

if [ "$mode" = wheels ]; then
  # pwmpr's build requirements, so that `pip install --no-index` can build it from source in the image.
  mapfile -t build_reqs < <("$PYTHON" - "$repo/pyproject.toml" <<'PY'
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
block = re.search(r"^\[build-system\](.*?)(?=^\[|\Z)", text, re.S | re.M).group(1)
print("\n".join(re.findall(r'"([^"]+)"', re.search(r"requires\s*=\s*\[(.*?)\]", block, re.S).group(1))))
PY
)
  mkdir -p "$wheel_dir"
  run "$PYTHON" -m pip wheel -q --no-cache-dir "${torch_args[@]}" -w "$wheel_dir" \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
  run "$PYTHON" -m pip wheel -q --no-cache-dir --find-links "$wheel_dir" -w "$wheel_dir" \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "$repo[$extras]" "${ort_pin[@]}" "${build_reqs[@]}"
  exit 0
fi

# 1. torch first, pinned: unpinned, pip may pick a torch that does not match the CUDA of onnxruntime-gpu, and on
#    PyPI the CPU flavour would get the CUDA build.
run "$PYTHON" -m pip install --no-cache-dir "${source_args[@]}" "${torch_args[@]}" \
  "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
# 2. pwmpr with exactly one onnxruntime flavour (torch and torchvision are already satisfied).
run "$PYTHON" -m pip install --no-cache-dir "${source_args[@]}" "$repo[$extras]" "${ort_pin[@]}"

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
if flavour == "cpu" and torch.version.cuda is not None:
    problems.append(f"torch {torch.__version__} is a CUDA {torch.version.cuda} build; the CPU flavour wants PyTorch's CPU wheels")
if flavour == "gpu" and "CUDAExecutionProvider" not in providers:
    problems.append(f"onnxruntime lists no CUDA provider ({providers})")
print(f"pwmpr {pwmpr.__version__} · torch {torch.__version__} (CUDA build {torch.version.cuda}) · "
      f"onnxruntime {ort.__version__} · providers {', '.join(providers)}")
if problems:
    sys.exit("install.sh: " + "; ".join(problems))
PY
"$PYTHON" -m pwmpr --help >/dev/null
echo "install.sh: ok ($flavour)"
