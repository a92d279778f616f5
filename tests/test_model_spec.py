"""``--model package.module:function``: the user's own factory, everywhere a registered name works.

Loading never runs code: a run or export folder naming such a model imports it only with --trust-code or
``trust_remote_code=True``.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

import pwmpr
from pwmpr import PwmprError
from pwmpr.cli.app import app
from pwmpr.models import create_model, trusted_code

runner = CliRunner()
TINY = ["--data", "digits", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "2", "--batch-size", "64",
        "--no-tau-core", "-q"]

USER_MODULE = '''
from torch import nn

IMPORTED = []
IMPORTED.append(1)  # a side effect: the tests check that loading does not import this module


def make(num_classes, input_shape):
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * h * w, num_classes))


def broken(num_classes, input_shape):
    raise ValueError("my factory needs a GPU")


def not_a_module(num_classes, input_shape):
    return 42
'''


@pytest.fixture
def user_module(importable):
    return importable("user_models", USER_MODULE)


def test_code_spec_needs_trust(user_module):
    with pytest.raises(PwmprError, match="--trust-code"):
        create_model(f"{user_module}:make", 10, (1, 8, 8))
    with trusted_code(f"{user_module}:make"):
        model = create_model(f"{user_module}:make", 10, (1, 8, 8))
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(("spec", "match"), [
    ("no_such_module_xyz:make", "no module named 'no_such_module_xyz'"),
    ("{m}:nothing", "has no attribute 'nothing'"),
    ("{m}:IMPORTED", "not callable"),
    ("{m}:broken", r"broken\(num_classes=10, input_shape=\(1, 8, 8\)\) failed: ValueError: my factory needs a GPU"),
    ("{m}:not_a_module", "must return a torch.nn.Module, got int"),
])
def test_code_spec_errors_are_clear(user_module, spec, match):
    with trusted_code(), pytest.raises(PwmprError, match=match):
        create_model(spec.format(m=user_module), 10, (1, 8, 8))


def test_code_spec_grows_exports_and_loads_only_when_trusted(tmp_path, user_module):
    spec = f"{user_module}:make"
    run = tmp_path / "run"
    result = runner.invoke(app, ["grow", *TINY, "--model", spec, "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["model"] == spec

    # A folder naming code is not imported silently: load, export, inspect and resume all say how to allow it.
    with pytest.raises(PwmprError, match="trust_remote_code=True"):
        pwmpr.load(run)
    unfinished = tmp_path / "unfinished"  # a finished run resumes to "nothing to do" without importing anything
    shutil.copytree(run, unfinished)
    (unfinished / "summary.json").unlink()
    for args in (["export", str(run), "--out", str(tmp_path / "e")], ["inspect", str(run)],
                 ["grow", "--resume", str(unfinished)], ["grow", "--config", str(run / "config.json"), "--out",
                                                  str(tmp_path / "again")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "--trust-code" in result.output, result.output
    model, masks = pwmpr.load(run, trust_remote_code=True)
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    assert set(masks) == {"0.weight", "3.weight"}

    result = runner.invoke(app, ["inspect", str(run), "--trust-code", "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "e"), "--trust-code", "--timing-runs",
                                 "1", "-q"])
    assert result.exit_code == 0, result.output
    model2, masks2 = pwmpr.load(tmp_path / "e", trust_remote_code=True)
    assert all(torch.equal(masks[n], masks2[n]) for n in masks)


def test_code_spec_runs_a_baseline(tmp_path, user_module):
    result = runner.invoke(app, ["baseline", "dense", "--data", "digits", "--model", f"{user_module}:make",
                                 "--epochs", "1", "--no-tau-core", "-q", "--out", str(tmp_path / "dense")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "dense" / "summary.json").read_text())
    assert summary["model"] == f"{user_module}:make" and summary["discovered_density"] == 1.0


CUMSUM_MODULE = '''
from torch import nn


class Cumsum(nn.Module):
    def forward(self, x):
        return x.cumsum(dim=1)


def cumsum(num_classes, input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), Cumsum(), nn.Linear(16, num_classes))


def fixed(num_classes, input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))
'''


def test_refused_model_leaves_nothing_that_blocks_the_corrected_command(tmp_path, importable):
    name = importable("cumsum_models", CUMSUM_MODULE)
    out = tmp_path / "run"
    # RigL never scores by PWMP; only its tau-core needs the scoring net, and the error says so before any training.
    result = runner.invoke(app, ["baseline", "rigl", "--data", "digits", "--model", f"{name}:cumsum", "--epochs",
                                 "1", "-q", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "the tau-core" in result.output and "--no-tau-core" in result.output, result.output
    assert not out.exists() or not any(out.iterdir())
    result = runner.invoke(app, ["grow", *TINY, "--model", f"{name}:cumsum", "--out", str(out)])
    assert result.exit_code == 2 and "cumsum()" in result.output, result.output
    assert not out.exists() or not any(out.iterdir())
    result = runner.invoke(app, ["grow", *TINY, "--model", f"{name}:fixed", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").is_file()


def test_missing_dependency_of_a_module_in_the_current_directory_is_named(tmp_path, monkeypatch):
    """A console script does not have the current directory on sys.path: pwmpr looks there last."""
    name = f"needs_dep_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("import not_installed_dep_xyz\n")
    monkeypatch.chdir(tmp_path)
    with trusted_code(), pytest.raises(PwmprError, match="it imports 'not_installed_dep_xyz', which is not installed"):
        create_model(f"{name}:make", 10, (1, 8, 8))
