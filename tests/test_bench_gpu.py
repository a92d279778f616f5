"""bench/gpu.sh dry run: its --device cpu smoke mode runs every section end to end and writes its table."""

from __future__ import annotations

import re
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
    # Section 4: every quantity's row holds a number; the tensor loader copies nothing per step (test_waste's rule).
    values = {}
    for row in re.findall(r"^\| (.+?) \| ([^|]+) \| (copies|bytes|x) \|$", text, flags=re.M):
        values[row[0]] = float(row[1])
    wanted = ["copies host->device per training step", "copies device->host per training step",
              "loader host memory per rank", "epoch snapshot memory (resnet20, sgd)",
              "epoch snapshot memory (resnet20, adamw)"]
    for want in wanted:
        assert any(k.startswith(want) for k in values), (want, sorted(values))
    assert values["copies host->device per training step (measured)"] == 0
    assert values["copies device->host per training step (measured)"] == 0
    # Smoke settings: batch 2 of 3 x 8 x 8 float32 inputs + int64 labels = 1,552 bytes; without workers one batch,
    # with them the workers' prefetched batches in /dev/shm plus the two the main process holds.
    host = next(v for k, v in values.items() if k.startswith("loader host memory per rank"))
    shm = values["of which in /dev/shm"]
    assert (host, shm) == (1552, 0) or (host - shm == 2 * 1552 and shm > 0 and shm % (2 * 1552) == 0), (host, shm)
    sgd, adamw = (next(v for k, v in values.items() if k.startswith(f"epoch snapshot memory / parameter bytes ({o};"))
                  for o in ("sgd", "adamw"))
    assert 2 <= sgd < 2.05 and 3 <= adamw < 3.05  # params + momentum (+ buffers); params + two moments (+ buffers)
