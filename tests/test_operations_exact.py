"""PWMP scores through the operations beyond the paper's networks, against brute-force path enumeration (to 1e-9).

Each tiny net is written out twice: as a torch module, and as explicit edges between nodes whose every
input->output path :func:`toy.enumerate_paths` lists (docs/method.md, Operations gives each stand-in).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from toy import Edge, enumerate_paths, linear_edges

from pwmpr import MaskSet, pwmp_scores


def _masks(net: torch.nn.Module, names: list[str], density: float = 0.7, seed: int = 0) -> MaskSet:
    g = torch.Generator().manual_seed(seed)
    return MaskSet({n: torch.rand(net.get_parameter(n).shape, generator=g) < density for n in names})


def _signed(net: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def _check(net: torch.nn.Module, masks: MaskSet, shape: tuple[int, ...], inputs: list, layers: list) -> None:
    brute = enumerate_paths(inputs, layers)
    scores = pwmp_scores(net, masks, shape)
    for name in masks:
        expected = torch.zeros(masks[name].shape, dtype=torch.float64)
        for (key, idx), value in brute.scores.items():
            if key == name:
                expected[idx] = value
        assert expected.abs().sum() > 0, name  # the check reaches every weight
        torch.testing.assert_close(scores[name], expected, rtol=1e-9, atol=1e-12)


def _w(net: torch.nn.Module, masks: MaskSet, name: str) -> list:
    return (net.get_parameter(name).detach().abs().double() * masks[name]).tolist()


# -- grouped and depthwise convolutions -----------------------------------------------------------------------------
def _conv_edges(level: int, w: list, name: str, hw: int, groups: int) -> list[Edge]:
    """A 3x3, stride 1, padding 1 conv over an hw x hw map: output o reads only the input channels of its group."""
    c_out, per_in = len(w), len(w[0])
    edges = []
    for o in range(c_out):
        group = o // (c_out // groups)
        for f in range(per_in):
            c = group * per_in + f
            for oy in range(hw):
                for ox in range(hw):
                    for ky in range(3):
                        for kx in range(3):
                            iy, ix = oy - 1 + ky, ox - 1 + kx
                            if 0 <= iy < hw and 0 <= ix < hw:
                                edges.append(Edge((level, c, iy, ix), (level + 1, o, oy, ox), w[o][f][ky][kx],
                                                  (name, (o, f, ky, kx))))
    return edges


def test_grouped_and_depthwise_convolutions():
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1, groups=2), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, padding=1, groups=4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 3 * 3, 2))
    _signed(net)
    masks = _masks(net, ["0.weight", "2.weight", "4.weight"])
    fc = _w(net, masks, "4.weight")
    layers = [
        _conv_edges(0, _w(net, masks, "0.weight"), "0.weight", 3, groups=2),
        _conv_edges(1, _w(net, masks, "2.weight"), "2.weight", 3, groups=4),
        [Edge((2, c, y, x), (3, o), fc[o][c * 9 + y * 3 + x], ("4.weight", (o, c * 9 + y * 3 + x)))
         for c in range(4) for y in range(3) for x in range(3) for o in range(2)],
    ]
    _check(net, masks, (4, 3, 3), [(0, c, y, x) for c in range(4) for y in range(3) for x in range(3)], layers)


# -- concatenation, channel shuffle, chunk ---------------------------------------------------------------------------
class _CatShuffleChunk(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(3, 4), torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)

    def forward(self, x):
        h = torch.cat([self.a(x), self.b(x)], dim=1)  # 6 features
        h = h.view(-1, 2, 3).transpose(1, 2).reshape(-1, 6)  # channel shuffle: new i <- old (i % 2) * 3 + i // 2
        h1, h2 = h.chunk(2, dim=1)
        return self.c(F.relu(h1) + h2)


def test_concatenation_shuffle_and_chunk():
    net = _CatShuffleChunk()
    _signed(net)
    masks = _masks(net, ["a.weight", "b.weight", "c.weight"])
    a, b = _w(net, masks, "a.weight"), _w(net, masks, "b.weight")
    cat = [Edge((0, i), (1, j), a[j][i], ("a.weight", (j, i))) for i in range(3) for j in range(4)]
    cat += [Edge((0, i), (1, 4 + j), b[j][i], ("b.weight", (j, i))) for i in range(3) for j in range(2)]
    shuffle = [Edge((1, (i % 2) * 3 + i // 2), (2, i), 1.0) for i in range(6)]
    chunk_add = [Edge((2, i), (3, i % 3), 1.0) for i in range(6)]
    layers = [cat, shuffle, chunk_add, linear_edges(3, net.c.weight, masks["c.weight"], "c.weight")]
    _check(net, masks, (3,), [(0, i) for i in range(3)], layers)


# -- a gate: the product of two activations is their sum -------------------------------------------------------------
class _Gate(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.g, self.c = torch.nn.Linear(3, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.c(h * torch.sigmoid(self.g(F.silu(h))))


def test_a_gate_is_linearized_as_a_sum():
    net = _Gate()
    _signed(net)
    masks = _masks(net, ["a.weight", "g.weight", "c.weight"])
    g = _w(net, masks, "g.weight")
    branch = [Edge((1, i), (2, j), g[j][i], ("g.weight", (j, i))) for i in range(4) for j in range(4)]
    branch += [Edge((1, j), (2, 4 + j), 1.0) for j in range(4)]  # the gated path itself, one level later
    merge = [Edge((2, j), (3, j), 1.0) for j in range(4)] + [Edge((2, 4 + j), (3, j), 1.0) for j in range(4)]
    layers = [linear_edges(0, net.a.weight, masks["a.weight"], "a.weight"), branch, merge,
              linear_edges(3, net.c.weight, masks["c.weight"], "c.weight")]
    _check(net, masks, (3,), [(0, i) for i in range(3)], layers)


# -- a channels-last block with a functional layer norm ---------------------------------------------------------------
class _ChannelsLast(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 1)
        self.norm_weight = torch.nn.Parameter(torch.tensor([-0.5, 2.0, 1.5]))
        self.fc, self.head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)

    def forward(self, x):
        h = self.conv(x).permute(0, 2, 3, 1)  # (N, H, W, C)
        h = F.layer_norm(h, (3,), self.norm_weight, None)
        h = self.fc(h).permute(0, 3, 1, 2)
        return self.head(h.mean((2, 3)))


def test_channels_last_block_with_a_functional_layer_norm():
    net = _ChannelsLast()
    _signed(net)
    with torch.no_grad():
        net.norm_weight.copy_(torch.tensor([-0.5, 2.0, 1.5]))
    masks = _masks(net, ["conv.weight", "fc.weight", "head.weight"])
    conv, fc = _w(net, masks, "conv.weight"), _w(net, masks, "fc.weight")
    cells = [(y, x) for y in range(2) for x in range(2)]
    layers = [
        [Edge((0, c, *p), (1, o, *p), conv[o][c][0][0], ("conv.weight", (o, c, 0, 0)))
         for c in range(2) for o in range(3) for p in cells],
        [Edge((1, o, *p), (2, o, *p), s) for o, s in enumerate([0.5, 2.0, 1.5]) for p in cells],  # |gamma|
        [Edge((2, i, *p), (3, j, *p), fc[j][i], ("fc.weight", (j, i))) for i in range(3) for j in range(3)
         for p in cells],
        [Edge((3, j, *p), (4, j), 0.25) for j in range(3) for p in cells],  # the spatial mean
        linear_edges(4, net.head.weight, masks["head.weight"], "head.weight"),
    ]
    _check(net, masks, (2, 2, 2), [(0, c, *p) for c in range(2) for p in cells], layers)


# -- nn.MultiheadAttention: packed projections, uniform attention ----------------------------------------------------
class _Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):  # x: (N, tokens, features)
        out, _ = self.attn(x, x, x)
        return self.head(out.mean(dim=1))


def test_packed_multihead_attention():
    torch.manual_seed(0)
    net = _Attention()
    _signed(net)
    names = ["attn.in_proj_weight", "attn.out_proj.weight", "head.weight"]
    masks = _masks(net, names)
    w_in, w_out = _w(net, masks, names[0]), _w(net, masks, names[1])
    t_, e = 3, 4
    layers = [
        # q and k rows carry no path mass under uniform attention; v rows are 8..11 of the packed weight.
        [Edge((0, t, i), (1, t, j), w_in[2 * e + j][i], (names[0], (2 * e + j, i)))
         for t in range(t_) for i in range(e) for j in range(e)],
        [Edge((1, s, j), (2, t, j), 1.0 / t_) for s in range(t_) for t in range(t_) for j in range(e)],
        [Edge((2, t, j), (3, t, o), w_out[o][j], (names[1], (o, j))) for t in range(t_) for j in range(e)
         for o in range(e)],
        [Edge((3, t, o), (4, o), 1.0 / t_) for t in range(t_) for o in range(e)],
        linear_edges(4, net.head.weight, masks["head.weight"], "head.weight"),
    ]
    brute = enumerate_paths([(0, t, i) for t in range(t_) for i in range(e)], layers)
    scores = pwmp_scores(net, masks, (t_, e))
    assert not scores[names[0]][: 2 * e].any()  # q and k rows: blind, as in the paper (open question 2)
    for name in names:
        expected = torch.zeros(masks[name].shape, dtype=torch.float64)
        for (key, idx), value in brute.scores.items():
            if key == name:
                expected[idx] = value
        torch.testing.assert_close(scores[name], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_scaled_dot_product_attention_is_uniform_over_the_visible_keys(causal):
    class Sdpa(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.head = (torch.nn.Linear(2, 2) for _ in range(4))

        def forward(self, x):  # (N, tokens, features)
            out = F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x), is_causal=causal)
            return self.head(out[:, 0])  # the first token: sees every key, or only itself when causal

    net = Sdpa()
    _signed(net)
    masks = _masks(net, ["v.weight", "head.weight"], density=1.0)
    v = _w(net, masks, "v.weight")
    t_ = 3
    visible = [0] if causal else list(range(t_))
    layers = [
        [Edge((0, t, i), (1, t, j), v[j][i], ("v.weight", (j, i))) for t in range(t_) for i in range(2)
         for j in range(2)],
        [Edge((1, s, j), (2, j), 1.0 / len(visible)) for s in visible for j in range(2)],
        linear_edges(2, net.head.weight, masks["head.weight"], "head.weight"),
    ]
    _check(net, masks, (t_, 2), [(0, t, i) for t in range(t_) for i in range(2)], layers)


# -- a linear layer over tokens (MLP-Mixer's token mixing): one weight shared by every channel -----------------------
class _TokenMixer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.t, self.head = torch.nn.Linear(2, 3), torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)

    def forward(self, x):  # x: (N, 3 tokens, 2 features)
        h = self.t(self.a(x).transpose(1, 2)).transpose(1, 2)  # (N, 2 tokens, 3 channels)
        return self.head(h.mean(dim=1))


def test_a_linear_over_tokens_scores_every_path_through_each_channel():
    net = _TokenMixer()
    _signed(net)
    masks = _masks(net, ["a.weight", "t.weight", "head.weight"])
    a, t = _w(net, masks, "a.weight"), _w(net, masks, "t.weight")
    layers = [
        [Edge((0, n, f), (1, n, c), a[c][f], ("a.weight", (c, f))) for n in range(3) for f in range(2)
         for c in range(3)],
        [Edge((1, n, c), (2, m, c), t[m][n], ("t.weight", (m, n))) for n in range(3) for m in range(2)
         for c in range(3)],  # token n -> token m, the same entry for every channel
        [Edge((2, m, c), (3, c), 0.5) for m in range(2) for c in range(3)],  # the mean over tokens
        linear_edges(3, net.head.weight, masks["head.weight"], "head.weight"),
    ]
    _check(net, masks, (3, 2), [(0, n, f) for n in range(3) for f in range(2)], layers)


# -- a 1-d convolution over units (ECA's channel attention): a banded, shared kernel --------------------------------
class _ConvOverUnits(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(3, 4)
        self.conv = torch.nn.Conv1d(1, 2, 3, padding=1, bias=False)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):  # (N, 3) -> a (N, 4 units) -> conv over those units (N, 2 channels, 4) -> head
        return self.head(self.conv(self.a(x).unsqueeze(1)).flatten(1))


def test_a_convolution_over_units_scores_every_tap_on_every_position():
    net = _ConvOverUnits()
    _signed(net)
    masks = _masks(net, ["a.weight", "conv.weight", "head.weight"])
    w = _w(net, masks, "conv.weight")
    # output channel o, position p reads unit p + t - 1 through tap t (the padding reads nothing)
    band = [Edge((1, p + t - 1), (2, o * 4 + p), w[o][0][t], ("conv.weight", (o, 0, t)))
            for o in range(2) for p in range(4) for t in range(3) if 0 <= p + t - 1 < 4]
    layers = [linear_edges(0, net.a.weight, masks["a.weight"], "a.weight"), band,
              linear_edges(2, net.head.weight, masks["head.weight"], "head.weight")]
    _check(net, masks, (3,), [(0, i) for i in range(3)], layers)
