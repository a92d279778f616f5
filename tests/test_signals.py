"""1-d signals (time series, spectra): ``npz`` arrays ``(N, C, L)``, per-channel standardisation, the 1-d ``cnn``,
and a grown network that learns and exports (docs/method.md, "Reading the forward"; README, "Your own data")."""

from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.data import load_data
from pwmpr.models import create_model


def _waves(path, n: int = 800, length: int = 32, seed: int = 0) -> None:
    """3 classes: a sine of 1, 2 or 3 cycles on channel 0 (random phase, noise); channel 1 is noise around 5."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.arange(length) / length
    phase = rng.uniform(0, 2 * np.pi, n)
    wave = np.sin(2 * np.pi * (y[:, None] + 1) * t[None, :] + phase[:, None])
    x = np.stack([wave + 0.3 * rng.normal(size=(n, length)), 5 + 2 * rng.normal(size=(n, length))], 1)
    np.savez(path, x=x.astype(np.float32), y=y)


def test_signals_load_as_channels_by_length_with_each_channel_standardised(tmp_path):
    _waves(tmp_path / "w.npz")
    b = load_data(f"npz:{tmp_path / 'w.npz'}")
    assert b.input_shape == (2, 32) and b.num_classes == 3 and b.default_model == "cnn"
    x = b.train.x
    # Each channel on its own: channel 1's offset of 5 and spread of 2 do not leak into channel 0's scale.
    # (statistics of the training part before the validation split: a few hundredths off on what is left)
    assert torch.allclose(x.mean(dim=(0, 2)), torch.zeros(2), atol=0.05)
    assert torch.allclose(x.std(dim=(0, 2)), torch.ones(2), atol=0.05)


def test_the_cnn_is_1d_for_signals_and_2d_for_images():
    assert create_model("cnn", 3, (2, 32)).features[0].__class__.__name__ == "Conv1d"
    assert create_model("cnn", 3, (2, 8, 8)).features[0].__class__.__name__ == "Conv2d"


def test_a_network_grown_on_signals_learns_and_exports(tmp_path):
    _waves(tmp_path / "w.npz")
    run, export = tmp_path / "run", tmp_path / "export"
    runner = CliRunner()
    grown = runner.invoke(app, ["grow", "--data", f"npz:{tmp_path / 'w.npz'}", "--seed-density", "0.2",
                                "--val-fraction", "0.2", "--phase-epochs", "3", "--final-epochs", "10",
                                "--max-phases", "2", "--batch-size", "32", "--no-tau-core", "-q", "--out", str(run)])
    assert grown.exit_code == 0, grown.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] > 0.8  # chance is a third: the 1-d convolutions learned the frequencies
    exported = runner.invoke(app, ["export", str(run), "--out", str(export), "-q"])
    assert exported.exit_code == 0, exported.output
    report = json.loads((export / "export_report.json").read_text())
    assert report["input_shape"] == [2, 32]
    assert all(e["ok"] and e["top1_mismatch"] == 0 for e in report["encodings"].values())
