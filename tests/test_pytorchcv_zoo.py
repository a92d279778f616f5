"""A third model zoo the rules were not written against: pytorchcv's classifiers (bench/cv_models.py, one small
member of each family, untrained). Each one's unit graph is read, a seed's masks hold and its PWMP scores are
computed, or it is refused in one line that names the op; DIA-ResNet grows, learns and exports end to end.
Skipped where pytorchcv is not installed (the README's test install brings it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from benchfiles import load_bench
from typer.testing import CliRunner

from pwmpr import prunable, pwmp_scores
from pwmpr.cli.app import app
from pwmpr.errors import PwmprError
from pwmpr.graph import build_unit_graph
from pwmpr.graph.mask_hold import check_masks_hold
from pwmpr.seed import phew_masks

pytest.importorskip("pytorchcv")
CV = load_bench("cv_models")

#: The models whose forward the walks cannot follow, and the words of the one line that says why.
REFUSED = {
    "isqrtcovresnet18": "its input's units vary along other dims than the one it reads",  # covariance pooling
    "dicenet_wd5": "its input's units lie along a dim it slides over",  # a convolution across the channels
    "channelnet": "its input's units lie along a dim it slides over",  # a 3-d convolution across the channels
    "condensenet74": "a grouped convolution reads one unit twice",  # channels gathered twice into the groups
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return CV.build(name, 10).eval()


def _shape(name: str) -> tuple[int, ...]:
    return (3, CV.SPECS[name][1], CV.SPECS[name][1])


@pytest.mark.parametrize("name", list(CV.SPECS))
def test_each_model_is_walked_seeded_and_scored_or_refused_in_one_line(name):
    model, shape = _model(name), _shape(name)
    if name in REFUSED:
        with pytest.raises(PwmprError, match=REFUSED[name].replace("(", r"\(").replace(")", r"\)")) as err:
            build_unit_graph(model, shape)
            phew_masks(model, 0.1, shape)
        assert "\n" not in str(err.value)
        return
    graph = build_unit_graph(model, shape)
    names = prunable(model)
    heads = [n for n in names if model.get_parameter(n).shape[0] == 10]  # the layers giving the 10 class scores
    assert set(heads) & set(graph.params_to_output())  # the classifier is on the path the walks follow
    masks = phew_masks(model, 0.1, shape)
    check_masks_hold(model, masks, shape)
    scores = pwmp_scores(model, masks, shape)
    assert all(torch.isfinite(scores[n]).all() for n in names)
    assert sum(float(scores[n][~masks[n]].sum()) for n in names) > 0  # growth has edges to choose from


def test_a_resnet_with_recurrent_attention_grows_learns_and_exports(tmp_path, monkeypatch):
    """DIA-ResNet: an LSTM cell shared by a stage's units gates the channels, its state started from ``zeros_like``
    (a constant the weights it meets are applied to)."""
    monkeypatch.syspath_prepend(str(Path(CV.__file__).parent))  # bench/: cv_models, as a user's module
    run, export = tmp_path / "run", tmp_path / "export"
    data = load_bench("zoo")._data(32, 700, tmp_path)  # the bench's data: mnist5k digits at 32 px, 3 channels
    runner = CliRunner()
    grown = runner.invoke(app, ["grow", "--data", f"npz:{data}", "--model", "cv_models:diaresnet20", "--trust-code",
                                "--seed-density", "0.2", "--phase-epochs", "2", "--final-epochs", "4",
                                "--max-phases", "2", "--batch-size", "32", "--val-fraction", "0.15", "--no-tau-core",
                                "-q", "--out", str(run)])
    assert grown.exit_code == 0, grown.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] > 0.5, summary["test_acc"]  # ten digit classes: chance is 0.1
    exported = runner.invoke(app, ["export", str(run), "--out", str(export), "--trust-code", "-q"])
    assert exported.exit_code == 0, exported.output
    report = json.loads((export / "export_report.json").read_text())
    assert all(e["ok"] for e in report["encodings"].values())
