"""Text to classify as token ids (``npz`` with ``tokens``), and the layers of transformers' text models that are
not Conv or Linear modules (docs/method.md, Operations): GPT-2's ``Conv1D`` (``torch.addmm`` on a matrix of its
own) and attention logits from ``torch.baddbmm`` with a position bias (BLOOM's ALiBi)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from pwmpr import MaskSet, prunable, pwmp_scores
from pwmpr.cli.app import app
from pwmpr.data import load_data
from pwmpr.errors import PwmprError
from pwmpr.graph.ops import op_of


def _tokens(path, n=1000, length=12, vocab=40, seed=0, **extra):
    """Token ids 2..vocab-1; label 1 when ids below 14 outnumber ids of 28 and above."""
    rng = np.random.default_rng(seed)
    x = rng.integers(2, vocab, size=(n, length))
    y = ((x < 14).sum(1) > (x >= 28).sum(1)).astype(np.int64)
    np.savez(path, **{"tokens": x, "y": y, **extra})
    return path


def test_token_ids_load_as_int64_unstandardised_with_a_held_out_test_split(tmp_path):
    bundle = load_data(f"npz:{_tokens(tmp_path / 't.npz')}", val_fraction=0.1)
    assert bundle.input_dtype == torch.int64 and bundle.input_shape == (12,) and bundle.num_classes == 2
    assert bundle.train.x.dtype == torch.int64 and int(bundle.train.x.min()) >= 2 and int(bundle.train.x.max()) < 40
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 1000 and len(bundle.test) == 200
    with pytest.raises(PwmprError, match="holds token ids, and no registered model reads them as a classifier: "
                                         "pass --model package.module:function"):
        bundle.auto_model()


@pytest.mark.parametrize(("tokens", "shown"), [
    (np.ones((20, 4), np.float32), "'tokens' must hold integer token ids, got float32"),
    (-np.ones((20, 4), np.int64), r"'tokens' holds token ids out of range \(negative, or above int64's\)"),
    (np.full((20, 4), 2**63, np.uint64), "'tokens' holds token ids out of range"),
    (np.ones((20, 0), np.int64), "'tokens' holds sequences of no tokens"),
    (np.ones((20, 4, 2), np.int64), r"'tokens' must have shape \(N, L\) of token ids, got \(20, 4, 2\)"),
])
def test_bad_token_arrays_are_refused_in_one_line(tmp_path, tokens, shown):
    path = tmp_path / "bad.npz"
    np.savez(path, tokens=tokens, y=np.arange(20) % 2)
    with pytest.raises(PwmprError, match=shown):
        load_data(f"npz:{path}")


def test_features_and_token_ids_together_are_refused(tmp_path):
    path = tmp_path / "both.npz"
    np.savez(path, x=np.ones((20, 4), np.float32), tokens=np.ones((20, 4), np.int64), y=np.arange(20) % 2)
    with pytest.raises(PwmprError, match="holds both 'x' and 'tokens'"):
        load_data(f"npz:{path}")


def test_grow_on_token_ids_without_a_model_says_to_bring_one(tmp_path):
    result = CliRunner().invoke(app, ["grow", "--data", f"npz:{_tokens(tmp_path / 't.npz', n=1500)}", "-q",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: data set 'npz:")
    assert not (tmp_path / "run").exists()


MODULE = '''
import torch
from torch import nn


class Conv1D(nn.Module):
    """GPT-2's layer: x @ W + b with W laid out (in, out), by torch.addmm."""

    def __init__(self, nx, nf):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * nx ** -0.5)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], self.nf)


class TokenNet(nn.Module):
    """Token embedding -> Conv1D -> self-attention over 2 heads, its logits from baddbmm with a position bias ->
    mean over the tokens -> head."""

    def __init__(self, num_classes, input_shape):
        super().__init__()
        t = input_shape[0]
        self.embed = nn.Embedding(40, 16)
        self.fc = Conv1D(16, 32)
        self.q, self.k, self.v = nn.Linear(32, 16), Conv1D(32, 16), nn.Linear(32, 16)
        self.pos_bias = nn.Parameter(torch.zeros(1, t, t))
        self.head = nn.Linear(16, num_classes)

    def forward(self, ids):
        b, t = ids.shape
        h = torch.relu(self.fc(self.embed(ids)))
        heads = lambda y: y.reshape(b, t, 2, 8).transpose(1, 2).reshape(b * 2, t, 8)  # noqa: E731
        q, k, v = heads(self.q(h)), heads(self.k(h)), heads(self.v(h))
        logits = torch.baddbmm(self.pos_bias[:, :t, :t].expand(b * 2, t, t), q, k.transpose(1, 2),
                               alpha=8 ** -0.5)
        mixed = torch.bmm(logits.softmax(dim=-1), v).reshape(b, 2, t, 8).transpose(1, 2).reshape(b, t, 16)
        return self.head(mixed.mean(dim=1))
'''


@pytest.fixture
def token_module(importable):
    return importable("tokens", MODULE)


class _Bare(nn.Module):  # a matrix without a bias: a position table as often as a layer
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3))


class _PositionTable(nn.Module):  # a table of 3 positions and a bias added to the tokens: no linear layer
    def __init__(self):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(3))

    def forward(self, x):  # (tokens, features): the shapes of a square linear layer's, not its values
        return x + self.weight[: x.shape[0]] + self.bias


class _OutIn(nn.Module):  # a hand-written Linear: (out, in) and x @ W^T + b
    def __init__(self):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(4))

    def forward(self, x):
        return x @ self.weight.T + self.bias


def test_a_layer_whose_forward_is_a_linear_layers_is_prunable_with_its_outputs_axis(token_module):
    import importlib

    from pwmpr.masks import unit_axis

    mod = importlib.import_module(token_module)
    net = nn.ModuleDict({"c": mod.Conv1D(3, 4), "s": mod.Conv1D(4, 4), "e": nn.Embedding(5, 3), "b": _Bare(),
                         "p": _PositionTable(), "o": _OutIn(), "l": nn.Linear(3, 4)})
    assert prunable(net) == ["c.weight", "s.weight", "o.weight", "l.weight"]
    # the square Conv1D too: its forward, not its shape, says where the outputs are
    assert [unit_axis(net, n) for n in prunable(net)] == [1, 1, 0, 0]
    # ... and not its values: zeros or the identity say nothing of the layout; nor does a float64 copy
    square = nn.ModuleDict({"s": mod.Conv1D(4, 4), "o": _OutIn()})
    square.o.weight = nn.Parameter(torch.eye(4))
    square.o.bias = nn.Parameter(torch.zeros(4))
    with torch.no_grad():
        square.s.weight.zero_()
    import copy

    for model in (square, copy.deepcopy(square).double()):
        assert [unit_axis(model, n) for n in prunable(model)] == [1, 0]


def _conv1d_and_linear(mod):
    """Two Conv1D layers and the same network as Linear layers (weights transposed), with masks for each."""
    torch.manual_seed(0)
    conv = nn.Sequential(mod.Conv1D(5, 4), nn.ReLU(), mod.Conv1D(4, 3))
    lin = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        for i in (0, 2):
            lin[i].weight.copy_(conv[i].weight.T)
    g = torch.Generator().manual_seed(1)
    cm = MaskSet({f"{i}.weight": torch.rand(conv[i].weight.shape, generator=g) < 0.6 for i in (0, 2)})
    return conv, lin, cm, MaskSet({n: m.T.contiguous() for n, m in cm.items()})


def test_tau_core_and_fan_in_scaling_see_a_conv1d_as_the_linear_layer_it_is(token_module):
    import importlib

    from pwmpr.seed.scale import scale_model
    from pwmpr.taucore import tau_core

    conv, lin, cm, lm = _conv1d_and_linear(importlib.import_module(token_module))
    tc, tl = tau_core(conv, cm, (5,), 0.5), tau_core(lin, lm, (5,), 0.5)
    assert (tc.n_hidden, tc.size, tc.units) == (tl.n_hidden, tl.size, tl.units) and tl.n_hidden == 4
    scale_model(conv, cm, "fan-in")
    scale_model(lin, lm, "fan-in")
    for i in (0, 2):
        torch.testing.assert_close(conv[i].weight.T, lin[i].weight)


def test_addmm_on_a_conv1d_scores_as_the_linear_layer_it_is(token_module):
    # x @ W + b by torch.addmm is W^T as a Linear: the same PWMP scores, transposed.
    import importlib

    conv, lin, cm, lm = _conv1d_and_linear(importlib.import_module(token_module))
    sc, sl = pwmp_scores(conv, cm, (5,)), pwmp_scores(lin, lm, (5,))
    for n in cm:
        assert sc[n].abs().sum() > 0
        torch.testing.assert_close(sc[n], sl[n].T)


def test_a_reflected_division_is_a_division():
    assert op_of(torch.Tensor.__rdiv__).name == op_of(torch.Tensor.__rtruediv__).name == "rdiv"


def test_a_token_classifier_grows_learns_and_exports(tmp_path, token_module):
    data = _tokens(tmp_path / "t.npz", n=1500)
    run, export = tmp_path / "run", tmp_path / "export"
    runner = CliRunner()
    grown = runner.invoke(app, ["grow", "--data", f"npz:{data}", "--model", f"{token_module}:TokenNet", "--trust-code",
                                "--seed-density", "0.3", "--phase-epochs", "4", "--final-epochs", "12",
                                "--max-phases", "2", "--batch-size", "64", "--no-tau-core", "-q", "--out", str(run)])
    assert grown.exit_code == 0, grown.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] > 0.75  # the majority class holds about 0.5
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    # the Conv1D layers are grown like Linear ones: each holds edges, none is dense
    assert all(0 < rows[-1]["layer_density"][n] < 1 for n in ("fc.weight", "k.weight"))
    exported = runner.invoke(app, ["export", str(run), "--out", str(export), "--trust-code", "-q"])
    assert exported.exit_code == 0, exported.output
    report = json.loads((export / "export_report.json").read_text())
    assert all(e["ok"] for e in report["encodings"].values())


@pytest.mark.parametrize(("name", "call"), [
    ("addmm", lambda f, b, x, w: f(b, x, w)),
    ("addmm", lambda f, b, x, w: f(b, x, mat2=w)),
    ("addmm", lambda f, b, x, w: f(b, mat1=x, mat2=w, beta=0.5, alpha=2.0)),
    ("addmm", lambda f, b, x, w: f(input=b, mat1=x, mat2=w)),
    ("addmm", lambda f, b, x, w: f(b.expand(2, 3) * float("nan"), x, w, beta=0)),  # beta 0: the input is not read
    ("addmm", lambda f, b, x, w: f(1, b, 0.5, x, w)),  # the deprecated (beta, input, alpha, mat1, mat2)
    ("addmm", lambda f, b, x, w: f(2, b, x, w)),  # the deprecated (beta, input, mat1, mat2)
    ("baddbmm", lambda f, b, x, w: f(b.expand(2, 1, 3), x[:, None], w.expand(2, 4, 3), alpha=0.25)),
    ("baddbmm", lambda f, b, x, w: f(b.expand(2, 1, 3), batch1=x[:, None], batch2=w.expand(2, 4, 3))),
])
def test_addmm_and_baddbmm_decompose_to_what_torch_computes_in_every_spelling(name, call):
    import warnings

    from pwmpr.graph.mode import DECOMPOSITIONS

    warnings.simplefilter("ignore")  # torch's note on the deprecated spellings
    g = torch.Generator().manual_seed(0)
    b, x, w = torch.randn(3, generator=g), torch.randn(2, 4, generator=g), torch.randn(4, 3, generator=g)
    torch.testing.assert_close(call(DECOMPOSITIONS[name], b, x, w), call(getattr(torch, name), b, x, w))


def test_an_addmm_call_pwmpr_cannot_read_is_refused_in_one_line():
    from pwmpr.graph.mode import DECOMPOSITIONS

    with pytest.raises(PwmprError, match="pwmpr cannot read this call of addmm"):
        DECOMPOSITIONS["addmm"](torch.zeros(3), torch.zeros(2, 4), torch.zeros(4, 3), torch.zeros(1))
