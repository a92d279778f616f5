"""A 1-d convolution that slides over units (ECA's channel attention), and an input read as one unit (a 1-d CNN over
a feature vector): which units the unit graph links (docs/method.md, "Operations", "Reading the forward").

Each case builds a chain in which every path crosses the convolution, enables one entry of each weight, and checks
whether an input-to-output path exists: the convolution's tap ``t`` at output position ``o`` must read the unit at
exactly the position the convolution itself reads.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.errors import PwmprError
from pwmpr.graph import build_unit_graph
from pwmpr.graph.reach import has_path
from pwmpr.masks import MaskSet
from pwmpr.score import pwmp_scores
from pwmpr.seed import phew_masks


class _Line(nn.Module):
    """3 features -> a (4 units) -> a 1-d conv over those 4 units (1 channel in, ``c_out`` out) -> fc (-> 1).
    No residual: every path crosses the conv."""

    def __init__(self, c_out: int = 1, padding: int | str = 1, dilation: int = 1, circular: bool = False,
                 stride: int = 1, kernel: int = 3) -> None:
        super().__init__()
        self.circular = circular
        self.a = nn.Linear(3, 4)
        self.conv = nn.Conv1d(1, c_out, kernel, padding=0 if circular else padding, dilation=dilation, stride=stride,
                              bias=False)
        n_out = self.conv(torch.zeros(1, 1, 4 + 2 * circular)).shape[-1]
        self.fc = nn.Linear(n_out * c_out, 1)

    def forward(self, x):
        h = self.a(x).unsqueeze(1)  # (N, 1, 4): the units lie along the dim the conv slides over
        if self.circular:
            h = F.pad(h, (1, 1), mode="circular")
        return self.fc(self.conv(h).flatten(1))


def _one(shape: tuple[int, ...], *index: int) -> torch.Tensor:
    m = torch.zeros(shape, dtype=torch.bool)
    m[index] = True
    return m


def _path(net: _Line, unit: int, tap: int, column: int, out_channel: int = 0) -> bool:
    """Is there a path when a feeds only ``unit``, the conv keeps only ``tap`` (of ``out_channel``), and fc reads
    only ``column``?"""
    masks = {"a.weight": _one((4, 3), unit, 0), "conv.weight": _one(tuple(net.conv.weight.shape), out_channel, 0, tap),
             "fc.weight": _one(tuple(net.fc.weight.shape), 0, column)}
    return has_path(build_unit_graph(net, (3,)), masks)


@pytest.mark.parametrize(("unit", "tap", "column", "reaches"), [
    (0, 1, 0, True),  # the centre tap: position 0 reads unit 0
    (0, 1, 1, False),  # position 1's centre tap reads unit 1, which a does not feed
    (0, 0, 1, True),  # tap 0 reads one to the left: position 1 <- unit 0
    (0, 2, 1, False),  # tap 2 reads one to the right: position 1 <- unit 2
    (3, 2, 2, True),  # position 2 <- unit 3 through tap 2
    (3, 2, 3, False),  # position 3's tap 2 reads the padding
    (0, 0, 0, False),  # position 0's tap 0 reads the padding
])
def test_each_tap_reads_the_unit_the_convolution_reads(unit, tap, column, reaches):
    assert _path(_Line(), unit, tap, column) is reaches


@pytest.mark.parametrize(("unit", "tap", "column", "reaches"), [
    (0, 2, 2, False), (2, 2, 0, True), (0, 0, 2, True), (1, 0, 3, True), (1, 0, 2, False),  # o reads o + 2 (t - 1)
])
def test_a_dilated_convolution_reads_every_other_unit(unit, tap, column, reaches):
    assert _path(_Line(padding=2, dilation=2), unit, tap, column) is reaches


@pytest.mark.parametrize(("unit", "tap", "column", "reaches"), [
    (0, 1, 0, True), (2, 1, 1, True), (1, 1, 0, False), (1, 2, 0, True), (1, 0, 1, True), (3, 2, 1, True),
    (3, 1, 1, False),
])
def test_a_strided_convolution_reads_every_other_window(unit, tap, column, reaches):
    # stride 2, padding 1: output position o reads unit 2 o + t - 1 (o = 0, 1)
    assert _path(_Line(stride=2), unit, tap, column) is reaches


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize(("unit", "tap", "column", "reaches"), [
    (0, 0, 0, True), (1, 1, 0, True), (0, 1, 0, False), (1, 0, 0, False), (3, 0, 3, True), (3, 1, 3, False),
])
def test_same_padding_with_an_even_kernel_pads_on_the_right(unit, tap, column, reaches):
    # kernel 2, padding 'same': torch pads 0 on the left and 1 on the right, so position o reads unit o + t
    assert _path(_Line(padding="same", kernel=2), unit, tap, column) is reaches


@pytest.mark.parametrize(("unit", "tap", "column", "reaches"), [
    (3, 0, 0, True),  # circular padding: position 0's left neighbour is unit 3
    (0, 2, 3, True),  # and position 3's right neighbour is unit 0
    (2, 0, 0, False),
])
def test_circular_padding_wraps_the_window(unit, tap, column, reaches):
    assert _path(_Line(circular=True), unit, tap, column) is reaches


def test_each_output_channel_reads_through_its_own_entries():
    net = _Line(c_out=2)
    # fc column 4 + o reads output channel 1 at position o; only channel 1's centre tap is kept.
    assert _path(net, 2, 1, 4 + 2, out_channel=1)
    assert not _path(net, 2, 1, 2, out_channel=1)  # channel 0 at position 2 has no entry
    assert not _path(net, 2, 1, 4 + 1, out_channel=1)


def test_the_shared_kernel_is_stored_once_per_tap():
    graph = build_unit_graph(_Line(c_out=2), (3,))
    links = [link for link in graph.links if link.param == "conv.weight"]
    assert len(links) == 2 * 3  # one link per output channel and tap
    assert all(link.weight.stride(0) == 0 for link in links)  # broadcast over the positions, not copied


class _Eca(nn.Module):
    """A conv stem, ECA's gate (mean over the map, a 3-tap conv over the channels, sigmoid, times the map), a head."""

    def __init__(self, num_classes: int = 10, input_shape: tuple[int, ...] = (1, 8, 8)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], 8, 3, padding=1)
        self.gate = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        g = torch.sigmoid(self.gate(h.mean((2, 3)).unsqueeze(1))).view(h.shape[0], -1, 1, 1)
        return self.head((h * g).mean((2, 3)))


def test_an_eca_gate_is_seeded_and_scored():
    net = _Eca()
    masks = phew_masks(net, 0.5, (1, 8, 8), seed=0)
    assert set(masks) == {"stem.weight", "gate.weight", "head.weight"}
    scores = pwmp_scores(net, MaskSet.dense(net), (1, 8, 8))
    assert bool((scores["gate.weight"] > 0).all())  # every tap carries paths from the input to the output


class _SignalCnn(nn.Module):
    """A 1-d CNN over a feature vector: the features are positions of one signal, not units."""

    def __init__(self, num_classes: int = 3, input_shape: tuple[int, ...] = (6,)) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(1, 4, 3, padding=1), nn.Conv1d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * input_shape[0], num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x.unsqueeze(1))))).flatten(1))


def signal_cnn(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """``--model test_conv_over_units:signal_cnn``: :class:`_SignalCnn` for any flat input."""
    return _SignalCnn(num_classes, input_shape)


def test_a_1d_cnn_over_flat_features_grows_learns_and_exports(tmp_path):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)  # 1,797 flat rows of 64 features
    np.savez(tmp_path / "flat.npz", x=x.astype(np.float32), y=y)
    run, export = tmp_path / "run", tmp_path / "export"
    runner = CliRunner()
    grown = runner.invoke(app, ["grow", "--data", f"npz:{tmp_path / 'flat.npz'}", "--model",
                                f"{__name__}:signal_cnn", "--trust-code", "--seed-density", "0.3", "--phase-epochs",
                                "2", "--final-epochs", "8", "--max-phases", "2", "--batch-size", "64", "--no-tau-core",
                                "-q", "--out", str(run)])
    assert grown.exit_code == 0, grown.output
    assert json.loads((run / "summary.json").read_text())["test_acc"] > 0.6  # chance is 0.1
    exported = runner.invoke(app, ["export", str(run), "--out", str(export), "--trust-code", "-q"])
    assert exported.exit_code == 0, exported.output


def test_a_convolution_over_the_input_reads_it_as_one_signal():
    graph = build_unit_graph(_SignalCnn(), (6,))
    assert graph.groups[0].n == 1  # one input unit, as a one-channel image has
    assert [link.param for link in graph.links] == ["c1.weight", "c2.weight", "fc.weight"]
    # c1's channel 2 feeds c2's channel 1 (one centre-tap entry), which fc reads at position 0 (column 1 x 6 + 0)
    masks = {"c1.weight": _one((4, 1, 3), 2, 0, 1), "c2.weight": _one((4, 4, 3), 1, 2, 1),
             "fc.weight": _one((3, 24), 0, 6)}
    assert has_path(graph, masks)
    masks["c2.weight"] = _one((4, 4, 3), 1, 3, 1)  # c2 reads c1's channel 3, which c1 does not feed
    assert not has_path(graph, masks)
    # One convolution alone could be read as sliding over 6 input units; it is read as the one-unit signal too.
    single = nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(24, 3))
    assert build_unit_graph(single, (6,)).groups[0].n == 1


def test_the_input_is_read_as_one_signal_only_where_a_convolution_slides_over_it():
    class Rows(nn.Module):  # 12 flat features read as 3 rows of 4: a linear over each row's features
        def __init__(self) -> None:
            super().__init__()
            self.row, self.fc = nn.Linear(4, 2), nn.Linear(6, 1)

        def forward(self, x):
            return self.fc(self.row(x.view(-1, 3, 4)).flatten(1))

    with pytest.raises(PwmprError, match="vary along other dims"):  # as before: no convolution, no signal
        build_unit_graph(Rows(), (12,))

    class SignalThenGrid(nn.Module):  # read as a signal the first conv is followed; the 2-d conv over units is not
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.grid, self.fc = nn.Conv1d(1, 4, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1), nn.LazyLinear(1)

        def forward(self, x):
            return self.fc(self.grid(self.c1(x.unsqueeze(1)).view(-1, 1, 4, 16)).flatten(1))

    net = SignalThenGrid()
    net(torch.zeros(1, 16))
    with pytest.raises(PwmprError, match=r"^module grid \(Conv2d\)"):  # what stops the signal reading is named
        build_unit_graph(net, (16,))


def test_a_window_reading_one_unit_twice_is_refused():
    class Repeated(nn.Module):  # the 4 units laid out twice along the conv's dim: 6 windows of 3 read 0, 1, 2, 3, 0, 1
        def __init__(self) -> None:
            super().__init__()
            self.a, self.conv, self.fc = nn.Linear(3, 4), nn.Conv1d(1, 1, 3, bias=False), nn.Linear(6, 1)

        def forward(self, x):
            h = self.a(x)
            return self.fc(self.conv(torch.cat([h, h], 1).unsqueeze(1)))

    with pytest.raises(PwmprError, match="one tap reads a unit at two positions"):
        build_unit_graph(Repeated(), (3,))


class _Beyond(nn.Module):
    """a's 4 units laid out for a convolution the rule does not cover: ``kind`` says which."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.a = kind, nn.Linear(3, 4)
        self.first = nn.Conv1d(1, 2, 3, padding=1)  # (N, 2, 4): units vary along both dims
        self.conv = {"two-dims": nn.Conv1d(2, 1, 3, padding=1), "grouped": nn.Conv1d(2, 2, 3, padding=1, groups=2),
                     "2d": nn.Conv2d(1, 1, 3, padding=1), "padded-channel": nn.Conv1d(2, 1, 3, padding=1)}[kind]
        self.fc = nn.LazyLinear(1)

    def forward(self, x):
        h = self.a(x)
        if self.kind == "two-dims":
            h = self.conv(self.first(h.unsqueeze(1)))
        elif self.kind == "grouped":  # the same units in both channels, each channel its own group
            h = self.conv(h.unsqueeze(1).expand(-1, 2, -1))
        elif self.kind == "padded-channel":  # a second channel of zeros, which carries no unit
            h = self.conv(F.pad(h.unsqueeze(1), (0, 0, 0, 1)))
        else:  # the units on a 2 x 2 grid
            h = self.conv(h.view(-1, 1, 2, 2))
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("kind", ["two-dims", "grouped", "2d", "padded-channel"])
def test_a_convolution_over_units_beyond_one_dim_and_one_group_is_refused(kind):
    net = _Beyond(kind)
    net(torch.zeros(1, 3))  # materialize the lazy head
    with pytest.raises(PwmprError, match="lie along a dim it slides over, which pwmpr follows only for a 1-d"):
        build_unit_graph(net, (3,))


def test_a_model_with_an_eca_gate_grows_and_exports(tmp_path):
    run, export = tmp_path / "run", tmp_path / "export"
    runner = CliRunner()
    grown = runner.invoke(app, ["grow", "--data", "digits", "--model", f"{__name__}:_Eca", "--trust-code",
                                "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "2", "--batch-size", "64",
                                "--no-tau-core", "-q", "--out", str(run)])
    assert grown.exit_code == 0, grown.output
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert rows[0]["layer_density"]["gate.weight"] > 0  # the seed kept a tap of the gate
    exported = runner.invoke(app, ["export", str(run), "--out", str(export), "--trust-code", "-q"])
    assert exported.exit_code == 0, exported.output
    report = json.loads((export / "export_report.json").read_text())
    assert report["safetensors"]["ok"] and report["encodings"]
    assert all(e["ok"] and e["top1_mismatch"] == 0 for e in report["encodings"].values())  # onnxruntime agrees
