"""Nets small enough to check by hand, and a brute-force path enumerator to check them with.

The enumerator knows nothing of autograd: a network is written out as layers of explicit edges between
nodes, every input->output path is listed, and each edge's PWMP score is the sum, over the paths through
it, of the product of the *other* edges' values (docs/method.md, "Score"). Absent edges are listed with value 0,
so paths through them are enumerated and their scores are exact.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from pwmpr.masks import MaskSet

Node = tuple
Key = tuple  # (weight name, index tuple) of a weight entry, or None for a fixed edge (norm scale, pooling)


@dataclass
class Edge:
    src: Node
    dst: Node
    value: float
    key: Key | None = None


@dataclass
class PathSums:
    """What enumerating every path gives: R, per-entry PWMP scores and per-node path mass."""

    total: float = 0.0
    scores: dict = field(default_factory=lambda: defaultdict(float))  # key -> score
    through: dict = field(default_factory=lambda: defaultdict(float))  # node -> mass of the paths through it
    n_paths: int = 0


def enumerate_paths(inputs: list[Node], layers: list[list[Edge]]) -> PathSums:
    """Every path from an input node through one edge of each layer in turn, with its products."""
    out = [defaultdict(list) for _ in layers]
    for level, edges in enumerate(layers):
        for e in edges:
            out[level][e.src].append(e)
    sums = PathSums()

    def walk(level: int, node: Node, path: list[Edge]) -> None:
        if level == len(layers):
            values = [e.value for e in path]
            sums.n_paths += 1
            product = math.prod(values)
            sums.total += product
            for i, e in enumerate(path):
                if e.key is not None:
                    sums.scores[e.key] += math.prod(values[:i] + values[i + 1 :])
                sums.through[e.dst] += product
            return
        for e in out[level][node]:
            walk(level + 1, e.dst, [*path, e])

    for node in inputs:
        walk(0, node, [])
    return sums


# -- edge builders ------------------------------------------------------------------------------------------------
def linear_edges(level: int, weight: torch.Tensor, mask: torch.Tensor, name: str) -> list[Edge]:
    """Edges of a Linear layer between node levels ``level`` and ``level + 1`` (nodes ``(level, i)``)."""
    w, m = weight.detach().abs().tolist(), mask.tolist()
    return [
        Edge((level, i), (level + 1, j), w[j][i] * m[j][i], (name, (j, i)))
        for j in range(len(w))
        for i in range(len(w[0]))
    ]


def conv2d_edges(
    level: int, weight: torch.Tensor, mask: torch.Tensor, name: str, in_hw: tuple[int, int], stride: int, pad: int
) -> tuple[list[Edge], tuple[int, int]]:
    """Edges of a Conv2d over an ``in_hw`` map, padding cells giving no path; returns the edges and the out size."""
    w, m = weight.detach().abs().tolist(), mask.tolist()
    c_out, c_in, k, _ = weight.shape
    h, wd = in_hw
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    edges = []
    for o in range(c_out):
        for oy in range(oh):
            for ox in range(ow):
                for c in range(c_in):
                    for ky in range(k):
                        for kx in range(k):
                            iy, ix = oy * stride - pad + ky, ox * stride - pad + kx
                            if 0 <= iy < h and 0 <= ix < wd:
                                v = w[o][c][ky][kx] * m[o][c][ky][kx]
                                edges.append(
                                    Edge((level, c, iy, ix), (level + 1, o, oy, ox), v, (name, (o, c, ky, kx)))
                                )
    return edges, (oh, ow)


def scale_edges(level: int, scale: list[float], spatial: tuple[int, ...] = ()) -> list[Edge]:
    """One fixed edge per node: a per-channel (or per-feature) positive scale, as a norm layer becomes."""
    grids = [()] if not spatial else [(y, x) for y in range(spatial[0]) for x in range(spatial[1])]
    return [Edge((level, c, *pos), (level + 1, c, *pos), s) for c, s in enumerate(scale) for pos in grids]


def avgpool_edges(level: int, channels: int, in_hw: tuple[int, int], k: int) -> tuple[list[Edge], tuple[int, int]]:
    """Non-overlapping k x k average pooling: every cell feeds its window's output with weight 1/k^2."""
    oh, ow = in_hw[0] // k, in_hw[1] // k
    edges = [
        Edge((level, c, y, x), (level + 1, c, y // k, x // k), 1.0 / (k * k))
        for c in range(channels)
        for y in range(oh * k)
        for x in range(ow * k)
    ]
    return edges, (oh, ow)


def flatten_edges(level: int, channels: int, hw: tuple[int, int]) -> list[Edge]:
    """(c, y, x) -> (c*H*W + y*W + x,), weight 1: nn.Flatten."""
    h, w = hw
    return [
        Edge((level, c, y, x), (level + 1, c * h * w + y * w + x), 1.0)
        for c in range(channels)
        for y in range(h)
        for x in range(w)
    ]


# -- the nets -----------------------------------------------------------------------------------------------------
def _set(layer: nn.Module, weight, bias=None) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def mlp_232() -> tuple[nn.Module, MaskSet]:
    """2-3-2 MLP with small integer weights; W1[2, 0] and W2[1, 1] are absent (masked out, though nonzero).

    Effective |W1| = [[1, 2], [3, 1], [0, 2]], effective |W2| = [[1, 2, 1], [2, 0, 3]]; biases are nonzero
    so that the tests see them ignored.
    """
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    _set(net[0], [[1, -2], [3, 1], [5, -2]], [0.5, -1.0, 2.0])
    _set(net[2], [[-1, 2, 1], [2, 4, -3]], [1.0, -1.0])
    masks = MaskSet(
        {
            "0.weight": torch.tensor([[1, 1], [1, 1], [0, 1]], dtype=torch.bool),
            "2.weight": torch.tensor([[1, 1, 1], [1, 0, 1]], dtype=torch.bool),
        }
    )
    return net, masks


def mlp_3432(seed: int = 0) -> tuple[nn.Module, MaskSet]:
    """3-4-3-2 MLP with BatchNorm1d, LayerNorm, ReLU and GELU, signed random weights and some masked edges.

    Hidden unit 1 of the first layer has no incoming edge (its row of mask 0 is all False), and edges from
    hidden unit 2 of the second layer to the output are all absent.
    """
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3), nn.LayerNorm(3), nn.GELU(), nn.Linear(3, 2)
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Linear, nn.BatchNorm1d, nn.LayerNorm)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
        net[1].running_mean.copy_(torch.randn(4, generator=g))
        net[1].running_var.copy_(torch.rand(4, generator=g) + 0.5)
    m0 = torch.rand(4, 3, generator=g) < 0.8
    m0[1] = False
    m0[0, 0] = False
    m1 = torch.rand(3, 4, generator=g) < 0.7
    m1[:, 1] = True  # unit 1 (no input) still feeds on, so the edges into it carry path mass
    m2 = torch.ones(2, 3, dtype=torch.bool)
    m2[:, 2] = False
    return net, MaskSet({"0.weight": m0, "3.weight": m1, "6.weight": m2})


def _bn_scale(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> list[float]:
    """BN in positive-scale form, worked out in plain Python: |gamma| / sqrt(running_var + eps) per channel."""
    return [abs(g) / math.sqrt(v + bn.eps) for g, v in zip(bn.weight.tolist(), bn.running_var.tolist(), strict=True)]


def mlp_3432_paths(net: nn.Module, masks: MaskSet) -> PathSums:
    """Brute-force path sums of :func:`mlp_3432` (norms as their positive scales)."""
    bn, ln = net[1], net[4]
    bn_scale = _bn_scale(bn)
    ln_scale = [abs(g) for g in ln.weight.tolist()]
    layers = [
        linear_edges(0, net[0].weight, masks["0.weight"], "0.weight"),
        scale_edges(1, bn_scale),
        linear_edges(2, net[3].weight, masks["3.weight"], "3.weight"),
        scale_edges(3, ln_scale),
        linear_edges(4, net[6].weight, masks["6.weight"], "6.weight"),
    ]
    return enumerate_paths([(0, i) for i in range(3)], layers)


def random_mlp(widths: tuple[int, ...] = (3, 6, 5, 2), density: float = 0.6, seed: int = 0):
    """Linear-ReLU MLP of the given widths, signed random weights and biases, random masks of about ``density``."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    names = [f"{i}.weight" for i, m in enumerate(net) if isinstance(m, nn.Linear)]
    masks = MaskSet({n: torch.rand(net.get_parameter(n).shape, generator=g) < density for n in names})
    return net, masks


def random_mlp_paths(net: nn.Sequential, masks: MaskSet) -> PathSums:
    """Brute-force path sums of :func:`random_mlp`; the output nodes of its k-th Linear are at level k + 1."""
    linears = [(f"{i}.weight", m) for i, m in enumerate(net) if isinstance(m, nn.Linear)]
    layers = [linear_edges(k, m.weight, masks[n], n) for k, (n, m) in enumerate(linears)]
    return enumerate_paths([(0, i) for i in range(linears[0][1].in_features)], layers)


class TinyCNN(nn.Module):
    """1x6x6 -> conv3x3(3, pad 1, bias) -> BN -> ReLU -> maxpool 2 -> conv3x3(3, stride 2, pad 1) -> ReLU -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 3, 3, stride=2, padding=1, bias=False)
        self.relu2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.conv1(x))))
        return self.fc(self.flatten(self.relu2(self.conv2(x))))


def tiny_cnn(seed: int = 0) -> tuple[nn.Module, MaskSet]:
    """A :class:`TinyCNN` with signed weights, a BN with negative gamma, nonzero shift and running mean, and masks.

    Channel 1 of conv1 has no incoming edge (all its kernel entries are absent).
    """
    g = torch.Generator().manual_seed(seed)
    net = TinyCNN()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        net.bn.weight.copy_(torch.tensor([-1.5, 0.7, 1.2]))
        net.bn.running_mean.copy_(torch.tensor([0.3, -2.0, 1.0]))
        net.bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.5]))
    m1 = torch.rand(3, 1, 3, 3, generator=g) < 0.7
    m1[1] = False
    m2 = torch.rand(3, 3, 3, 3, generator=g) < 0.6
    m2[:, 1, 1, 1] = True
    mfc = torch.rand(2, 12, generator=g) < 0.7
    return net, MaskSet({"conv1.weight": m1, "conv2.weight": m2, "fc.weight": mfc})


def tiny_cnn_paths(net: TinyCNN, masks: MaskSet) -> PathSums:
    """Brute-force path sums of :func:`tiny_cnn` over every channel and spatial position (max pool as average)."""
    bn = net.bn
    bn_scale = _bn_scale(bn)
    conv1, hw = conv2d_edges(0, net.conv1.weight, masks["conv1.weight"], "conv1.weight", (6, 6), 1, 1)
    pool, hw_pool = avgpool_edges(2, 3, hw, 2)
    conv2, hw2 = conv2d_edges(3, net.conv2.weight, masks["conv2.weight"], "conv2.weight", hw_pool, 2, 1)
    layers = [
        conv1,
        scale_edges(1, bn_scale, hw),
        pool,
        conv2,
        flatten_edges(4, 3, hw2),
        linear_edges(5, net.fc.weight, masks["fc.weight"], "fc.weight"),
    ]
    return enumerate_paths([(0, 0, y, x) for y in range(6) for x in range(6)], layers)


def funnel() -> nn.Module:
    """1 -> 2 -> 1 net whose hidden unit 0 carries 19 of the 20 units of path mass (95%).

    Paths: x -> h0 -> y has product 1 * 19 = 19, x -> h1 -> y has product 1 * 1 = 1; R = 20.
    """
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1))
    _set(net[0], [[1], [-1]], [3.0, 3.0])
    _set(net[2], [[19, -1]], [5.0])
    return net


def two_hidden() -> nn.Module:
    """1 -> 2 -> 2 -> 1 net where greedy removal with recompute beats a static ranking.

    Effective weights: x->a1 3, x->b1 1; a1->a2 1, b1->a2 1, b1->b2 1; a2->y 1, b2->y 1 (a1->b2 is 0).
    Paths: x-a1-a2-y 3, x-b1-a2-y 1, x-b1-b2-y 1; R = 5. Centralities: a1 3, b1 2, a2 4, b2 1.
    """
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    _set(net[0], [[3], [1]])
    _set(net[2], [[1, 1], [0, 1]])
    _set(net[4], [[1, 1]])
    return net


class Bypass(nn.Module):
    """y = skip(x) + out(hidden(x)): the skip carries path mass through no hidden unit.

    Effective weights: skip 1 -> 1 weight 3; hidden 1 -> 1 weight 1; out 1 -> 1 weight 1. R = 3 + 1 = 4.
    Both ``skip`` and ``out`` produce the output, so the only hidden unit is ``hidden``'s one feature.
    """

    def __init__(self) -> None:
        super().__init__()
        self.skip = nn.Linear(1, 1, bias=False)
        self.hidden = nn.Linear(1, 1, bias=False)
        self.out = nn.Linear(1, 1, bias=False)
        self.relu = nn.ReLU()
        _set(self.skip, [[3]])
        _set(self.hidden, [[1]])
        _set(self.out, [[-1]])

    def forward(self, x):
        return self.skip(x) + self.out(self.relu(self.hidden(x)))


class FlopNet(nn.Module):
    """3x8x8 -> conv3x3(4, pad 1) -> ReLU -> conv3x3(8, stride 2, pad 1) -> GAP -> fc(8->10); tokens via fc_tok.

    ``fc_tok`` is a Linear(6 -> 4) applied to a (5, 6) token slab built from the fc output, to count tokens.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)
        self.fc_tok = nn.Linear(6, 4)

    def forward(self, x):
        x = self.fc(self.pool(self.conv2(self.relu(self.conv1(x)))).flatten(1))
        tokens = x[:, :6].unsqueeze(1).expand(-1, 5, -1)
        return self.fc_tok(tokens).flatten(1)


def first_k_mask(shape: tuple[int, ...], k: int) -> torch.Tensor:
    """A bool mask of ``shape`` whose first ``k`` entries (in flat order) are True."""
    flat = torch.zeros(math.prod(shape), dtype=torch.bool)
    flat[:k] = True
    return flat.view(shape)
