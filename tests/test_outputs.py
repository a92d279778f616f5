"""Models that return more than a tensor (a dict with ``logits``, ``(logits, features)``, transformers' output
objects): which tensor pwmpr reads as the class scores, and that such a model grows, learns and exports with the
scores as its one ONNX output (docs/method.md, "Reading the forward")."""

from __future__ import annotations

import json
import textwrap
from collections import OrderedDict

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.errors import PwmprError
from pwmpr.export.safetensors_io import load_export
from pwmpr.models import trusted_code
from pwmpr.probe import class_scores

A, B = torch.ones(2, 3), torch.zeros(2, 4)


class _Output:
    """An output object with attributes, as transformers' ``ModelOutput`` also is."""

    def __init__(self, **fields) -> None:
        self.__dict__.update(fields)


@pytest.mark.parametrize(("out", "expected"), [
    (A, A),
    ({"hidden": B, "logits": A}, A),  # the logits entry, wherever it sits
    (OrderedDict(loss=None, logits=A), A),  # ModelOutput without labels: its loss is None
    (_Output(hidden=B, logits=A), A),
    ({"scores": A}, A),  # a dict with one tensor
    ((A, B), A),  # return logits, features
    ([A, B], A),
])
def test_the_class_scores_are_the_logits_or_the_first_entry(out, expected):
    assert class_scores(out) is expected


@pytest.mark.parametrize(("out", "shown"), [
    ({"a": A, "b": B}, "a dict with keys 'a', 'b'"),  # two tensors, neither named logits
    ((None, A), "a tuple of NoneType, Tensor"),
    ([], "a list of nothing"),
    (3.0, "a float"),
])
def test_an_output_without_readable_class_scores_is_refused_in_one_line(out, shown):
    with pytest.raises(PwmprError, match=f"the model returns {shown}: pwmpr reads class scores from a tensor"):
        class_scores(out)


MODULE = '''
import torch
from torch import nn


class Heads(nn.Module):
    """A hidden layer, then an auxiliary head and the classifier; the dict puts the auxiliary scores first."""

    def __init__(self, num_classes, input_shape):
        super().__init__()
        self.f = nn.Linear(64, 64)
        self.aux, self.out = nn.Linear(64, num_classes), nn.Linear(64, num_classes)
        for m in (self.f, self.aux, self.out):
            nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        h = torch.relu(self.f(x.flatten(1)))
        return {"aux_logits": self.aux(h), "logits": self.out(h)}


class Pair(Heads):
    def forward(self, x):
        h = torch.relu(self.f(x.flatten(1)))
        return self.out(h), h
'''


@pytest.mark.parametrize("factory", ["Heads", "Pair"])
def test_a_model_returning_more_than_its_scores_grows_learns_and_exports_them(tmp_path, monkeypatch, factory):
    name = f"outputs_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    run, export = tmp_path / "run", tmp_path / "export"
    runner = CliRunner()
    grown = runner.invoke(app, ["grow", "--data", "digits", "--model", f"{name}:{factory}", "--trust-code",
                                "--seed-density", "0.3", "--phase-epochs", "3", "--final-epochs", "10", "--max-phases",
                                "2", "--batch-size", "64", "--no-tau-core", "-q", "--out", str(run)])
    assert grown.exit_code == 0, grown.output
    assert json.loads((run / "summary.json").read_text())["test_acc"] > 0.7  # trained on the logits: chance is 0.1
    exported = runner.invoke(app, ["export", str(run), "--out", str(export), "--trust-code", "-q"])
    assert exported.exit_code == 0, exported.output
    report = json.loads((export / "export_report.json").read_text())
    assert all(e["ok"] and e["top1_mismatch"] == 0 for e in report["encodings"].values())
    graph = onnx.load(str(export / "model.onnx")).graph
    assert len(graph.output) == 1  # the class scores alone
    # ... and they are the classifier's, not the auxiliary head's or the features
    with trusted_code(f"{name}:{factory}"):
        model, _ = load_export(export / "model.safetensors", export / "masks.safetensors")
    x = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        h = torch.relu(model.f(torch.from_numpy(x).flatten(1)))
        expected = model.out(h).numpy()
    session = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
