"""torchrun (DDP, gloo on CPU): two ranks grow one network, rank 0 alone writes, masks agree across ranks."""

import json
import os
import shutil
import subprocess

import pytest


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_two_rank_run_writes_one_folder_and_agrees_on_masks(tmp_path):
    out = tmp_path / "run"
    cmd = ["torchrun", "--nproc-per-node", "2", "--master-port", "29517", "-m", "pwmpr", "grow", "--data", "digits",
           "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "3", "--no-tau-core",
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each rank would raise "masks differ across ranks" before the summary if growth had diverged.
    assert proc.stdout.count("discovered density") == 1  # rank 0 alone prints
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["phase", "phase", "phase", "final"]
    assert rows[1]["density"] > rows[0]["density"]
    assert (out / "final.safetensors").exists() and (out / "summary.json").exists()
