"""The GPU image's two CUDA stacks agree: torch, onnxruntime-gpu and the base image are built for one CUDA major.

A mismatch makes onnxruntime-gpu fall back to the CPU without an error. The majors come from the checked-in table
docker/cuda-stacks.json (the wheels' own requirements); CI checks the pins against it without downloading them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    script = (ROOT / "docker" / "install.sh").read_text()
    return {name: re.search(rf"^{var}=(\S+)", script, flags=re.M).group(1)
            for name, var in (("torch", "TORCH_VERSION"), ("onnxruntime-gpu", "ORT_GPU_VERSION"))}


def _base_cuda_major() -> int:
    base = re.search(r"^ARG BASE=nvidia/cuda:(\d+)\.", (ROOT / "Dockerfile").read_text(), flags=re.M)
    return int(base.group(1))


def test_the_gpu_image_pins_one_cuda_major_for_torch_onnxruntime_and_the_base():
    table = json.loads((ROOT / "docker" / "cuda-stacks.json").read_text())
    majors = {}
    for package, version in _pins().items():
        assert version in table[package], f"{package} {version} is not in docker/cuda-stacks.json"
        majors[package] = table[package][version]
    majors["base image"] = _base_cuda_major()
    assert len(set(majors.values())) == 1, majors


def test_the_gpu_install_passes_the_onnxruntime_pin_to_pip():
    script = (ROOT / "docker" / "install.sh").read_text()
    assert 'ort_pin=("onnxruntime-gpu==$ORT_GPU_VERSION")' in script
    assert script.count('"${ort_pin[@]}"') == 2  # the wheelhouse and the install
