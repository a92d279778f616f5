"""Models that return more than a tensor (a dict with ``logits``, ``(logits, features)``, transformers' output
objects): which tensor pwmpr reads as the class scores, and that such a model grows, learns and exports with the
scores as its one ONNX output (docs/method.md, "Reading the forward")."""

from __future__ import annotations

import json
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


class Patched(Heads):
    """Its forward set on the object, as wrappers' hooks do."""

    def __init__(self, num_classes, input_shape):
        super().__init__(num_classes, input_shape)
        self.forward = self.patched

    def patched(self, x):
        return {"logits": self.out(torch.relu(self.f(x.flatten(1)))), "hidden": x}


class Hooked(Heads):
    """A forward hook of its own that reads the dict it returns."""

    def __init__(self, num_classes, input_shape):
        super().__init__(num_classes, input_shape)
        self.register_forward_hook(self.check)

    @staticmethod
    def check(module, args, out):
        assert out["aux_logits"].dim() == 2  # a tensor in its place would fail here


class Two(Heads):
    def forward(self, x):
        h = torch.relu(self.f(x.flatten(1)))
        return {"a": self.out(h), "b": self.aux(h)}
'''


@pytest.fixture
def outputs_module(importable):
    return importable("outputs", MODULE)


@pytest.mark.parametrize("factory", ["Heads", "Pair", "Patched", "Hooked"])
def test_a_model_returning_more_than_its_scores_grows_learns_and_exports_them(tmp_path, outputs_module, factory):
    name = outputs_module
    run, export = tmp_path / "run", tmp_path / "export"
    runner = CliRunner()
    grown = runner.invoke(app, ["grow", "--data", "digits", "--model", f"{name}:{factory}", "--trust-code",
                                "--seed-density", "0.3", "--phase-epochs", "3", "--final-epochs", "10", "--max-phases",
                                "2", "--batch-size", "64", "--no-tau-core", "-q", "--out", str(run)])
    assert grown.exit_code == 0, grown.output
    assert json.loads((run / "summary.json").read_text())["test_acc"] > 0.7  # trained on the logits: chance is 0.1
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    # the auxiliary head leads to no class score: neither the seed nor a recruit (pwmp-explore) gives it an edge
    assert all(r["layer_density"]["aux.weight"] == 0 for r in rows)
    exported = runner.invoke(app, ["export", str(run), "--out", str(export), "--trust-code", "-q"])
    assert exported.exit_code == 0, exported.output
    report = json.loads((export / "export_report.json").read_text())
    assert all(e["ok"] and e["top1_mismatch"] == 0 for e in report["encodings"].values())
    proto = onnx.load(str(export / "model.onnx"))
    # the export view keeps the dynamo exporter (a ``*args`` forward sent every such model to TorchScript)
    assert proto.producer_name == "pwmpr (torch.onnx dynamo)"
    graph = proto.graph
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


def test_two_outputs_neither_named_logits_are_refused_in_one_line(tmp_path, outputs_module):
    result = CliRunner().invoke(app, ["grow", "--data", "digits", "--model", f"{outputs_module}:Two", "--trust-code",
                                      "-q", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "the model returns a dict with keys 'a', 'b': pwmpr reads class scores" in " ".join(result.output.split())


class AuxHead(torch.nn.Module):
    """A hidden layer, an auxiliary head pwmpr does not train on, and the classifier, returned as a dict."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        n = int(np.prod(input_shape))
        self.f, self.aux = torch.nn.Linear(n, 32), torch.nn.Linear(32, num_classes)
        self.out = torch.nn.Linear(32, num_classes)

    def forward(self, x):
        h = torch.relu(self.f(x.flatten(1)))
        return {"aux_logits": self.aux(h), "logits": self.out(h)}


def _heads(pair: bool = False) -> torch.nn.Module:
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.f, self.aux, self.out = torch.nn.Linear(64, 16), torch.nn.Linear(16, 10), torch.nn.Linear(16, 10)

        def forward(self, x):
            h = torch.relu(self.f(x.flatten(1)))
            return (self.out(h), self.aux(h)) if pair else self.out(h)

    return Model()


def test_gradient_scores_are_the_class_scores_gradients():
    from pwmpr.growth import GROWTH_RULES
    from pwmpr.masks import MaskSet

    plain, pair = _heads(), _heads(pair=True)
    masks = MaskSet({n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.5
                     for n, p in plain.named_parameters() if n.endswith("weight")})
    batch = (torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.arange(8) % 10)
    score = GROWTH_RULES.get("gradient").scores
    expected, got = score(plain, masks, (1, 8, 8), lambda: batch), score(pair, masks, (1, 8, 8), lambda: batch)
    for name in masks:
        torch.testing.assert_close(got[name], expected[name])
    assert bool((got["aux.weight"] == 0).all())  # the auxiliary output is not in the loss


def test_synflow_scores_the_class_scores_alone():
    from pwmpr.seed import SEEDS

    plain, pair = _heads(), _heads(pair=True)
    expected, got = SEEDS.get("synflow")(plain, 0.3, (1, 8, 8), 0), SEEDS.get("synflow")(pair, 0.3, (1, 8, 8), 0)
    assert all(torch.equal(got[n], expected[n]) for n in expected)


def test_head_importance_reads_the_class_scores_of_a_vit_returning_a_dict():
    from pwmpr.attention import head_importance
    from pwmpr.masks import MaskSet
    from pwmpr.models import create_model

    class Wrapped(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return {"hidden": x, "logits": self.inner(x)}

    torch.manual_seed(0)
    vit = create_model("vit-mini", 10, (1, 28, 28))
    wrapped = Wrapped(vit)
    masks = MaskSet.dense(vit)
    batch = (torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(3)), torch.arange(4))
    expected = head_importance(vit, masks, (1, 28, 28), batch)
    got = head_importance(wrapped, MaskSet({f"inner.{n}": m for n, m in masks.items()}), (1, 28, 28), batch)
    assert expected and all(torch.allclose(got[i], expected[i]) for i in expected)


def test_a_model_class_that_cannot_be_subclassed_so_is_refused_in_one_line():
    from pwmpr.export.pipeline import scores_only

    class Strict(torch.nn.Module):
        def __init_subclass__(cls, *, tag: str, **kwargs) -> None:  # every subclass must name a tag
            super().__init_subclass__(**kwargs)

        def forward(self, x):
            return {"logits": x}

    with pytest.raises(PwmprError, match="cannot export only those from a Strict"):
        scores_only(Strict())
