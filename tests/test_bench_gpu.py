"""bench/gpu.sh dry run: its --device cpu smoke mode runs every section end to end and writes its table."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 2 minutes on a loaded 2-core machine: run with --run-slow
def test_gpu_benchmark_smoke_mode_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu-smoke.md"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "SMOKE RUN" in text and "masked / dense" in text and "share of one epoch" in text
    assert "onnxruntime (packed)" in text and "PyTorch eager (cpu)" in text
