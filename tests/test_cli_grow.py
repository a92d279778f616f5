"""`pwmpr grow` end to end on tiny settings: the loop, the run folder, --config, resume after SIGKILL, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from runfiles import history, without_timing
from safetensors.torch import load_file
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.config import CONFIG_VERSION

runner = CliRunner()
TINY = ["--data", "digits", "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "3",
        "--batch-size", "64", "--seed-density", "0.1", "-q"]


def _grow(*args: str):
    return runner.invoke(app, ["grow", *args])


def test_grow_writes_a_complete_run_folder(tmp_path):
    run = tmp_path / "run"
    result = _grow(*TINY, "--out", str(run))
    assert result.exit_code == 0, result.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "mlp" and cfg["growth"]["seed_density"] == 0.1 and cfg["version"] == CONFIG_VERSION
    rows = history(run)
    assert [r["stage"] for r in rows] == ["phase", "phase", "phase", "final"]
    densities = [r["density"] for r in rows]
    assert densities[0] == pytest.approx(0.1, abs=0.002)
    assert densities[1] == pytest.approx(densities[0] * 1.25, rel=0.01)  # gamma = 0.25
    for key in ("layer_density", "train_loss", "val_acc", "cost_flops", "cost_epochs", "wall_time", "tau_core",
                "fwd_flops_sparse", "train_flops"):
        assert key in rows[0], key
    assert rows[-1]["cost_epochs"] == pytest.approx(4 / 1)  # 3 phases + final of 1 epoch vs a 1-epoch dense run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "max-phases"
    assert summary["discovered_density"] == pytest.approx(densities[-1])
    assert 0.0 <= summary["test_acc"] <= 1.0
    final = load_file(run / "final.safetensors")
    masks = {k[5:]: v for k, v in final.items() if k.startswith("mask/")}
    assert set(masks) == {"net.1.weight", "net.3.weight", "net.5.weight"}
    weights = {k[6:]: v for k, v in final.items() if k.startswith("model/")}
    assert all(torch.all(weights[n][~m] == 0) for n, m in masks.items())
    # Only what resume needs: the newest checkpoint and the one before it (--keep-checkpoints 2).
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["phase-0002.safetensors",
                                                                       "phase-0003.safetensors"]
    assert (run / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(run.rglob("*.tmp"))


def test_config_json_reproduces_the_run(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert _grow(*TINY, "--out", str(first)).exit_code == 0
    result = _grow("--config", str(first / "config.json"), "--out", str(second), "-q")
    assert result.exit_code == 0, result.output
    assert without_timing(history(first)) == without_timing(history(second))


def test_flags_override_a_config_file(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert _grow(*TINY, "--out", str(first)).exit_code == 0
    assert _grow("--config", str(first), "--out", str(second), "--max-phases", "2", "-q").exit_code == 0
    assert json.loads((second / "config.json").read_text())["stop"]["max_phases"] == 2


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    args = ["grow", "--data", "digits", "--model", "mlp", "--phase-epochs", "15", "--final-epochs", "60",
            "--max-phases", "4", "--seed-density", "0.1", "--no-tau-core", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([sys.executable, "-m", "pwmpr", *args, "--out", str(whole)], check=True, env=env, cwd=tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "pwmpr", *args, "--out", str(killed)], env=env, cwd=tmp_path)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "phase-0001.safetensors").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.02)
    time.sleep(0.1)  # into the next phase
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before SIGKILL: nothing was tested"
    resumed = subprocess.run([sys.executable, "-m", "pwmpr", "grow", "--resume", str(killed), "-q"], env=env,
                             cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert without_timing(history(whole)) == without_timing(history(killed))
    a, b = load_file(whole / "final.safetensors"), load_file(killed / "final.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_an_adamw_run_resumed_from_its_first_checkpoint_matches_an_uninterrupted_one(tmp_path):
    """Adam's moments and per-tensor step counts go through the checkpoint file: a run cut back to its first
    checkpoint and resumed ends with the same history and bit-identical final weights."""
    import shutil

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = [*TINY, "--phase-epochs", "2", "--final-epochs", "2", "--optimizer", "adamw", "--no-tau-core",
            "--keep-checkpoints", "0"]
    assert _grow(*args, "--out", str(whole)).exit_code == 0
    first = load_file(whole / "checkpoints" / "phase-0000.safetensors")
    steps = {k: v for k, v in first.items() if k.endswith("/step")}
    assert steps and all(v.dim() == 0 and v.item() > 0 for v in steps.values())  # Adam's state is in the file
    shutil.copytree(whole, cut)
    for path in [cut / "summary.json", cut / "final.safetensors", *sorted((cut / "checkpoints").iterdir())[1:]]:
        path.unlink()
    (cut / "history.jsonl").write_text(json.dumps(history(whole)[0]) + "\n")  # what a kill after phase 0 leaves
    result = _grow("--resume", str(cut), "-q")
    assert result.exit_code == 0, result.output
    assert without_timing(history(whole)) == without_timing(history(cut))
    a, b = load_file(whole / "final.safetensors"), load_file(cut / "final.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet21"], "unknown model 'resnet21'"),
        (["--data", "cifar11"], "unknown data set 'cifar11'"),
        (["--data", "tinyimagenet"], "needs --data-dir"),
        (["--data", "imagenet", "--data-dir", "/nonexistent/imagenet"], "must contain train/ and val/"),
        (["--seed-density", "0"], "seed_density must be in"),
        (["--seed-density", "1.5"], "seed_density must be in"),
        (["--gamma", "-1"], "gamma must be"),
        (["--phase-epochs", "0"], "phase_epochs must be"),
        (["--max-density", "3"], "max_density must be"),
        (["--lr", "0"], "lr must be"),
        (["--growth", "magic"], "unknown growth rule 'magic'"),
        (["--device", "tpu"], "device must be"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = _grow(*TINY, *args, "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


def test_bad_npz_files(tmp_path):
    np.savez(tmp_path / "noy.npz", x=np.zeros((30, 4)))
    np.savez(tmp_path / "short.npz", x=np.zeros((30, 4)), y=np.zeros(29, dtype=int))
    r1 = _grow(*TINY, "--data", f"npz:{tmp_path / 'noy.npz'}", "--out", str(tmp_path / "r1"))
    r2 = _grow(*TINY, "--data", f"npz:{tmp_path / 'short.npz'}", "--out", str(tmp_path / "r2"))
    assert (r1.exit_code, r2.exit_code) == (2, 2)
    assert "lacks array(s) y" in r1.output and "has 30 samples but 'y' has 29" in r2.output


def test_output_folder_rules(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = _grow(*TINY, "--out", str(busy))
    assert result.exit_code == 2 and "not empty" in result.output and "--force" in result.output
    (tmp_path / "afile").write_text("x")
    result = _grow(*TINY, "--out", str(tmp_path / "afile" / "run"))
    assert result.exit_code == 2 and "not writable" in result.output
    result = _grow(*TINY, "--out", str(tmp_path / "afile"))
    assert result.exit_code == 2 and "not a directory" in result.output


def test_force_overwrites_and_resume_needs_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert _grow(*TINY, "--out", str(run)).exit_code == 0
    assert _grow(*TINY, "--out", str(run), "--force").exit_code == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _grow("--resume", str(empty))
    assert result.exit_code == 2 and "config.json" in result.output
    result = _grow("--resume", str(run), "--gamma", "0.5")
    assert result.exit_code == 2 and "--resume takes the run folder's own config.json" in result.output


def test_resume_of_a_finished_run_restores_a_history_cut_short(tmp_path):
    run = tmp_path / "run"
    assert _grow(*TINY, "--out", str(run)).exit_code == 0
    rows = history(run)
    # A kill between the last checkpoint and history.jsonl leaves the file one row short.
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))
    (run / "summary.json").unlink()  # such a run was killed before it finished
    result = _grow("--resume", str(run), "-q")
    assert result.exit_code == 0, result.output
    assert history(run) == rows


def test_checkpoints_load_as_models(tmp_path):
    import pwmpr

    run = tmp_path / "run"
    assert _grow(*TINY, "--out", str(run), "--keep-checkpoints", "0").exit_code == 0
    model, masks = pwmpr.load(run / "checkpoints" / "phase-0000.safetensors")
    # The checkpoint after phase 0 holds the state phase 1 starts from: the grown masks.
    assert masks.density() == pytest.approx(history(run)[1]["density"])
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_config_file_with_unknown_keys(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model": "mlp", "colour": "red"}))
    result = _grow("--config", str(cfg), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "unknown key(s) in config: colour" in result.output


def test_diverging_loss_stops_cleanly(tmp_path):
    run = tmp_path / "run"
    result = _grow(*TINY, "--lr", "1e30", "--out", str(run))
    assert result.exit_code == 2
    assert "loss became" in result.output and "Traceback" not in result.output
    assert (run / "config.json").exists() and not (run / "summary.json").exists()


def test_out_of_memory_in_training_is_one_line_and_keeps_the_weights(tmp_path, monkeypatch):
    from pwmpr.train import trainer as trainer_mod

    real_step, calls = trainer_mod.Trainer._step, []

    def step_then_oom(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # after two real steps: the epoch's start must come back
            raise trainer_mod._OOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, *args, **kwargs)

    seen = {}
    real_restore = trainer_mod.Trainer._restore

    def recording_restore(self, snapshot):
        real_restore(self, snapshot)
        pairs = zip(self._state_tensors(), snapshot[0], strict=True)
        seen["restored"] = all(torch.equal(live, saved) for live, saved in pairs)

    monkeypatch.setattr(trainer_mod.Trainer, "_step", step_then_oom)
    monkeypatch.setattr(trainer_mod.Trainer, "_restore", recording_restore)
    result = _grow(*TINY, "--out", str(tmp_path / "run"))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert lines[-1].startswith("error: out of memory") and "lower --batch-size" in lines[-1]
    assert seen["restored"]  # the weights went back to the epoch's start before the error


def test_cuda_request_without_cuda_is_an_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = _grow(*TINY, "--device", "cuda", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_help_lists_every_flag_with_its_default():
    result = runner.invoke(app, ["grow", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--model", "--data", "--data-dir", "--seed-density", "--gamma", "--growth", "--phase-epochs",
                 "--final-epochs", "--max-phases", "--max-density", "--batch-size", "--lr", "--device", "--seed",
                 "--out", "--resume", "--config", "--quiet"):
        assert flag in result.output, flag
    assert "(default: 0.05)" in result.output and "(default: 0.25)" in result.output


def test_python_dash_m_pwmpr_help():
    out = subprocess.run([sys.executable, "-m", "pwmpr", "--help"], capture_output=True, text=True, check=True)
    assert "grow" in out.stdout
