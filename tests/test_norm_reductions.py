"""Norms as reductions (docs/method.md, Operations): ``torch.norm`` and ``torch.linalg.vector_norm`` reduce over
the dims they are given, read past the norm's order; ConvNeXt-V2's global response normalization (a per-channel
gain from each channel's L2 norm over the map) grows, learns and exports."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.graph import build_unit_graph
from pwmpr.graph.ops import op_of, reduced_dims


@pytest.mark.parametrize(("func", "args", "kwargs", "dims"), [
    (torch.norm, (2, 1), {}, [1]),  # the order first, then the dim
    (torch.norm, (2,), {"dim": (1, 2)}, [1, 2]),
    (torch.norm, (), {}, [0, 1, 2, 3]),
    (torch.linalg.vector_norm, (2, (1, 2)), {}, [1, 2]),
    (torch.linalg.vector_norm, (), {"ord": 2, "dim": -1, "keepdim": True}, [3]),
    (torch.linalg.vector_norm, (2, None, True), {}, [0, 1, 2, 3]),
    (torch.std, (1,), {}, [1]),  # a reduction without an order reads its dim second
    (torch.mean, ((2, 3),), {}, [2, 3]),
])
def test_a_norm_reduces_over_its_dims_not_its_order(func, args, kwargs, dims):
    x = torch.zeros(2, 3, 4, 5)
    op = op_of(func)
    assert reduced_dims(op, (x, *args), kwargs, x.dim()) == dims


MODULE = '''
import torch
from torch import nn


class GRN(nn.Module):
    """Global response normalization (ConvNeXt V2), channels last."""

    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, c))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, c))

    def forward(self, x):
        gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Net(nn.Module):
    def __init__(self, num_classes, input_shape):
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], 16, 3, padding=1)
        self.pw = nn.Linear(16, 32)
        self.grn = GRN(32)
        self.head = nn.Linear(32 * input_shape[1] * input_shape[2], num_classes)

    def forward(self, x):
        h = torch.relu(self.stem(x)).permute(0, 2, 3, 1)
        h = self.grn(torch.nn.functional.gelu(self.pw(h)))
        return self.head(h.flatten(1))
'''


def test_a_global_response_normalization_block_grows_learns_and_exports(tmp_path, importable):
    name = importable("grn", MODULE)
    import importlib

    model = importlib.import_module(name).Net(10, (1, 8, 8))
    graph = build_unit_graph(model, (1, 8, 8))
    assert {"stem.weight", "pw.weight", "head.weight"} <= set(graph.params_to_output())
    run, export = tmp_path / "run", tmp_path / "export"
    runner = CliRunner()
    grown = runner.invoke(app, ["grow", "--data", "digits", "--model", f"{name}:Net", "--trust-code", "--seed-density",
                                "0.3", "--phase-epochs", "3", "--final-epochs", "10", "--max-phases", "2",
                                "--batch-size", "64", "--no-tau-core", "-q", "--out", str(run)])
    assert grown.exit_code == 0, grown.output
    assert json.loads((run / "summary.json").read_text())["test_acc"] > 0.5  # chance is 0.1
    exported = runner.invoke(app, ["export", str(run), "--out", str(export), "--trust-code", "-q"])
    assert exported.exit_code == 0, exported.output
    report = json.loads((export / "export_report.json").read_text())
    assert all(e["ok"] for e in report["encodings"].values())
