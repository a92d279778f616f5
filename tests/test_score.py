"""PWMP and gradient scores (pwmpr.score) against hand counts and brute-force path enumeration."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy import Bypass, mlp_232, mlp_3432, mlp_3432_paths, tiny_cnn, tiny_cnn_paths

from pwmpr import MaskSet, PwmprError, prunable
from pwmpr.gradient_score import gradient_scores
from pwmpr.models.vit import ViT
from pwmpr.score import pwmp_scores
from pwmpr.surrogate import linear_surrogate


def _brute_tensor(scores: dict, name: str, like: torch.Tensor) -> torch.Tensor:
    """The brute-force scores of weight ``name`` laid out as a tensor like ``like``."""
    out = torch.zeros_like(like, dtype=torch.float64)
    for (key, idx), v in scores.items():
        if key == name:
            out[idx] = v
    return out


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
    }


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k
    assert before["modes"] == after["modes"]
    assert before["requires_grad"] == after["requires_grad"]
    assert all(g is None for g in after["grads"])


# -- hand-written 2-3-2 example ----------------------------------------------------------------------------------
def test_pwmp_232_matches_hand_written_path_products():
    # Effective |W1| = [[1, 2], [3, 1], [0, 2]] (W1[2, 0] absent), |W2| = [[1, 2, 1], [2, 0, 3]] (W2[1, 1] absent).
    # Inputs x0 = x1 = 1. Score of an edge = sum over the paths through it of the product of the other edges.
    net, masks = mlp_232()
    s = pwmp_scores(net, masks, (2,))
    w1 = [
        # edge x_i -> h_j: paths continue to y0 and y1 through |W2[0, j]| and |W2[1, j]|
        [1 + 2, 1 + 2],  # h0: x->h0->y0 (1) + x->h0->y1 (2)
        [2 + 0, 2 + 0],  # h1: x->h1->y0 (2) + x->h1->y1 (0, absent)
        [1 + 3, 1 + 3],  # h2: x->h2->y0 (1) + x->h2->y1 (3); W1[2, 0] is absent yet scores 4
    ]
    w2 = [
        # edge h_j -> y_k: paths come from x0 and x1 through |W1[j, 0]| and |W1[j, 1]|
        [1 + 2, 3 + 1, 0 + 2],  # y0: h0 (x0: 1, x1: 2), h1 (3, 1), h2 (0 absent, 2)
        [1 + 2, 3 + 1, 0 + 2],  # y1: the same; W2[1, 1] is absent yet scores 4
    ]
    assert s["0.weight"].tolist() == w1
    assert s["2.weight"].tolist() == w2
    # R = sum of every path product = 3*3 + 4*2 + 2*4 = 25; the scores are dR/dW_eff, so sum(|W_eff| * score)
    # counts each path once per edge on it (two edges per path).
    eff = {n: net.get_parameter(n).detach().abs().double() * masks[n] for n in masks}
    assert sum(float((eff[n] * s[n]).sum()) for n in s) == 2 * 25


def test_pwmp_returns_float64_of_weight_shape_and_only_masked_names():
    net, masks = mlp_232()
    only = MaskSet({"2.weight": masks["2.weight"]})
    s = pwmp_scores(net, only, (2,))
    assert list(s) == ["2.weight"]
    assert s["2.weight"].dtype == torch.float64 and s["2.weight"].shape == (2, 3)
    # 0.weight has no mask, so it is dense (|W1[2, 0]| = 5 counts): h2 now has F = 5 + 2.
    assert s["2.weight"][:, 2].tolist() == [7.0, 7.0]


# -- brute force --------------------------------------------------------------------------------------------------
def test_pwmp_equals_brute_force_paths_on_mlp_with_norms():
    net, masks = mlp_3432()
    paths = mlp_3432_paths(net, masks)
    assert paths.n_paths == 3 * 4 * 3 * 2
    s = pwmp_scores(net, masks, (3,))
    for name in masks:
        torch.testing.assert_close(s[name], _brute_tensor(paths.scores, name, s[name]), rtol=1e-9, atol=0.0)


def test_pwmp_equals_brute_force_paths_on_cnn_over_positions_and_padding():
    net, masks = tiny_cnn()
    paths = tiny_cnn_paths(net, masks)
    assert paths.n_paths > 1000
    s = pwmp_scores(net, masks, (1, 6, 6))
    for name in masks:
        torch.testing.assert_close(s[name], _brute_tensor(paths.scores, name, s[name]), rtol=1e-9, atol=0.0)


def test_edge_into_unit_without_input_gets_its_exact_nonzero_score():
    # mlp_3432: hidden unit 1 of layer 0 has no incoming edge, so F = 0 there and its ReLU sits at 0, where
    # torch's derivative is 0. The scoring net is linear (docs/method.md, "Score"), so edges into it still score their
    # path sum, and edges out of it score 0 (no path reaches it).
    net, masks = mlp_3432()
    assert not masks["0.weight"][1].any()
    paths = mlp_3432_paths(net, masks)
    s = pwmp_scores(net, masks, (3,))
    into = s["0.weight"][1]
    assert (into > 0).all()
    torch.testing.assert_close(into, _brute_tensor(paths.scores, "0.weight", s["0.weight"])[1], rtol=1e-9, atol=0.0)
    assert (s["3.weight"][:, 1] == 0).all()
    # The same in the CNN: conv1 output channel 1 has no incoming edge.
    net, masks = tiny_cnn()
    assert not masks["conv1.weight"][1].any()
    s = pwmp_scores(net, masks, (1, 6, 6))
    assert (s["conv1.weight"][1] > 0).all()


def test_pwmp_on_dense_net_with_relu_matches_synflow_gradient():
    # Dense and zero-bias, the ReLUs never sit at 0, so SynFlow's plain autograd on |W| gives the same scores.
    net, masks = mlp_232()
    dense = MaskSet.dense(net)
    ref = copy.deepcopy(net).double()
    with torch.no_grad():
        for m in ref:
            if isinstance(m, nn.Linear):
                m.weight.abs_()
                m.bias.zero_()
    ref(torch.ones(1, 2, dtype=torch.float64)).sum().backward()
    s = pwmp_scores(net, dense, (2,))
    assert torch.equal(s["0.weight"], ref[0].weight.grad)
    assert torch.equal(s["2.weight"], ref[2].weight.grad)


# -- normalisation ------------------------------------------------------------------------------------------------
def test_batchnorm_enters_as_positive_scale_only():
    # 1 -> 1 -> 1 chain with BN between: the edge scores are |w2| * |gamma| / sqrt(var + eps) and |w1| * that scale.
    net = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        net[0].weight.fill_(2.0)
        net[3].weight.fill_(-3.0)
        net[1].weight.fill_(-0.5)
        net[1].bias.fill_(7.0)
        net[1].running_mean.fill_(100.0)
        net[1].running_var.fill_(3.0)
    masks = MaskSet.dense(net)
    scale = 0.5 / math.sqrt(3.0 + net[1].eps)
    s = pwmp_scores(net, masks, (1,))
    assert s["0.weight"].item() == pytest.approx(scale * 3.0, rel=1e-12)
    assert s["3.weight"].item() == pytest.approx(2.0 * scale, rel=1e-12)
    # Shift, running mean and the sign of gamma do not matter; the variance does.
    with torch.no_grad():
        net[1].weight.fill_(0.5)
        net[1].bias.fill_(-7.0)
        net[1].running_mean.fill_(-5.0)
    assert torch.equal(pwmp_scores(net, masks, (1,))["0.weight"], s["0.weight"])
    with torch.no_grad():
        net[1].running_var.fill_(12.0)
    assert pwmp_scores(net, masks, (1,))["0.weight"].item() == pytest.approx(
        3.0 * 0.5 / math.sqrt(12.0 + net[1].eps), rel=1e-12
    )


def test_linear_surrogate_is_a_float64_copy_with_effective_weights():
    net, masks = tiny_cnn()
    sur = linear_surrogate(net, masks)
    assert torch.equal(sur.conv2.weight, net.conv2.weight.detach().abs().double() * masks["conv2.weight"])
    assert all(p.dtype == torch.float64 and not p.requires_grad and bool((p >= 0).all()) for p in sur.parameters())
    assert not sur.training and net.bn.weight[0] < 0  # the original keeps its signs


def test_linear_surrogate_forward_uses_the_stand_ins():
    # By hand: conv |W|*mask without bias, BN as |gamma| / sqrt(var + eps), ReLU as the identity, max pool as average
    # pool (padding not counted), fc without bias.
    net, masks = tiny_cnn()
    x = torch.ones(1, 1, 6, 6, dtype=torch.float64)
    w = {n: net.get_parameter(n).detach().abs().double() * masks[n] for n in masks}
    h = F.conv2d(x, w["conv1.weight"], padding=1)
    h = h * (net.bn.weight.detach().double().abs() / torch.sqrt(net.bn.running_var.double() + net.bn.eps)).view(
        1, -1, 1, 1)
    h = F.avg_pool2d(h, 2)
    h = F.conv2d(h, w["conv2.weight"], stride=2, padding=1)
    expected = F.linear(h.flatten(1), w["fc.weight"])
    torch.testing.assert_close(linear_surrogate(net, masks)(x), expected, rtol=1e-12, atol=0)


class _ReluNet(nn.Module):
    """The same net with its ReLU as a module or as a function call."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.functional = functional
        self.a, self.act, self.b = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(torch.relu(h) if self.functional else self.act(h))


def test_a_functional_activation_gets_the_module_s_stand_in():
    torch.manual_seed(0)
    module, functional = _ReluNet(False), _ReluNet(True)
    functional.load_state_dict(module.state_dict())
    masks = MaskSet({"a.weight": torch.tensor([[1, 1, 0]] * 3 + [[0, 0, 0]], dtype=torch.bool)})  # unit 3: no input
    s_mod, s_fun = pwmp_scores(module, masks, (3,)), pwmp_scores(functional, masks, (3,))
    assert s_fun["a.weight"][3].gt(0).all()  # edges into the input-less unit keep their path sums
    for name in s_mod:
        assert torch.equal(s_mod[name], s_fun[name])


def test_an_op_without_a_stand_in_is_named():
    class Cumulative(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 3), nn.Linear(3, 1)

        def forward(self, x):
            return self.b(torch.cumsum(self.a(x), dim=1))

    with pytest.raises(PwmprError, match=r"module Cumulative \(Cumulative\) calls cumsum\(\) in its forward: "
                                         r"pwmpr has no linear stand-in"):
        pwmp_scores(Cumulative(), {}, (2,))


# -- ViT ----------------------------------------------------------------------------------------------------------
def test_pwmp_on_vit_uses_uniform_attention_and_leaves_model_alone():
    torch.manual_seed(0)
    vit = ViT((3, 8, 8), 3, dim=12, depth=2, heads=3, mlp_ratio=2, patch=2)  # vit-tiny's code at a tiny size
    g = torch.Generator().manual_seed(0)
    masks = MaskSet({n: torch.rand(vit.get_parameter(n).shape, generator=g) < 0.2 for n in prunable(vit)})
    before = _snapshot(vit)
    s = pwmp_scores(vit, masks, (3, 8, 8))
    _assert_unchanged(vit, before)
    assert not any(getattr(m, "uniform", False) for m in vit.modules())
    for name, t in s.items():
        assert torch.isfinite(t).all() and (t >= 0).all(), name
        if name.endswith((".q.weight", ".k.weight")):
            # Uniform attention ignores queries and keys: no path runs through them.
            assert (t == 0).all(), name
        else:
            assert (t > 0).any(), name


# -- validation and side effects ----------------------------------------------------------------------------------
def test_pwmp_leaves_model_parameters_buffers_and_mode_unchanged():
    net, masks = tiny_cnn()
    net.train()
    net.bn.eval()  # a mixed mode must come back as it was
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    before = _snapshot(net)
    pwmp_scores(net, masks, (1, 6, 6))
    linear_surrogate(net, masks)
    gradient_scores(net, masks, (torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 1, 0])))
    _assert_unchanged(net, before)
    assert calls == [1]  # gradient_scores runs the model itself once; the scoring copies carry no hooks


def test_pwmp_rejects_bad_masks_and_input_shape():
    net, masks = mlp_232()
    with pytest.raises(PwmprError, match="names no parameter"):
        pwmp_scores(net, {"nope.weight": torch.ones(2, 2, dtype=torch.bool)}, (2,))
    with pytest.raises(PwmprError, match="shape"):
        pwmp_scores(net, {"0.weight": torch.ones(2, 3, dtype=torch.bool)}, (2,))
    with pytest.raises(PwmprError, match="not prunable"):
        pwmp_scores(net, {"0.bias": torch.ones(3, dtype=torch.bool)}, (2,))
    with pytest.raises(PwmprError, match=r"input_shape \(5,\)"):
        pwmp_scores(net, masks, (5,))
    with pytest.raises(PwmprError, match="input_shape"):
        pwmp_scores(net, masks, ())


def test_scores_are_the_same_under_a_callers_no_grad():
    net, masks = mlp_232()
    with torch.no_grad():
        s = pwmp_scores(net, masks, (2,))
        g = gradient_scores(net, masks, (torch.ones(1, 2), torch.tensor([1])))
    assert s["0.weight"].tolist() == [[3, 3], [2, 2], [4, 4]]
    assert torch.equal(g["0.weight"], gradient_scores(net, masks, (torch.ones(1, 2), torch.tensor([1])))["0.weight"])


def test_pwmp_accepts_a_plain_dict_of_masks():
    net, masks = mlp_232()
    s = pwmp_scores(net, masks.to_dict(), [2])
    assert s["0.weight"].tolist() == [[3, 3], [2, 2], [4, 4]]


def test_pwmp_scores_zero_when_no_path_reaches_the_output():
    net, masks = mlp_232()
    cut = MaskSet({"0.weight": torch.zeros(3, 2, dtype=torch.bool), "2.weight": masks["2.weight"]})
    s = pwmp_scores(net, cut, (2,))
    assert (s["2.weight"] == 0).all()  # F = 0 at every hidden unit
    assert (s["0.weight"] > 0).all()  # but each absent first-layer edge would open paths


def test_pwmp_on_model_with_two_output_layers():
    s = pwmp_scores(Bypass(), MaskSet.dense(Bypass()), (1,))
    assert (s["skip.weight"].item(), s["hidden.weight"].item(), s["out.weight"].item()) == (1.0, 1.0, 1.0)


# -- gradient scores ----------------------------------------------------------------------------------------------
def test_gradient_scores_match_closed_form_softmax_gradient_including_absent_entries():
    # One Linear layer z = W_eff x + b with cross-entropy: dL/dW = mean_n (softmax(z_n) - onehot(y_n)) x_n^T.
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2]))
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool)
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]])
    y = torch.tensor([1, 0])
    s = gradient_scores(lin, {"weight": mask}, (x, y))
    w_eff = lin.weight.detach() * mask
    p = torch.softmax(x @ w_eff.T + lin.bias.detach(), dim=1)
    expected = ((p - F.one_hot(y, 2).float()).T @ x / 2).abs().double()
    torch.testing.assert_close(s["weight"], expected, rtol=1e-6, atol=1e-7)
    assert s["weight"][0, 1] > 0 and s["weight"][1, 2] > 0  # absent entries get their dense gradient
    assert s["weight"].dtype == torch.float64


def test_gradient_scores_keep_bn_running_statistics_and_reject_bad_batches():
    net, masks = tiny_cnn()
    net.train()
    before = _snapshot(net)
    gradient_scores(net, masks, (torch.randn(3, 1, 6, 6), torch.tensor([0, 1, 0])), train=True)
    gradient_scores(net, masks, [torch.randn(3, 1, 6, 6), torch.tensor([0, 1, 0])], train=False)
    _assert_unchanged(net, before)
    with pytest.raises(PwmprError, match="batch"):
        gradient_scores(net, masks, torch.randn(3, 1, 6, 6))
