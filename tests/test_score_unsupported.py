"""What the PWMP scoring net puts in place of ops beyond Conv/Linear (docs/method.md, Operations), and the ops it
refuses with an error naming the module and the op, never a wrong score."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pwmpr import MaskSet, PwmprError, pwmp_scores, tau_core


class _Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _net(act: nn.Module, width: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), act, nn.Linear(width // (2 if isinstance(act, nn.GLU) else 1), 3))


def _scores(model: nn.Module) -> dict[str, torch.Tensor]:
    return pwmp_scores(model, MaskSet.dense(model), (4,))


@pytest.mark.parametrize("act", [nn.LogSigmoid(), _Fn(torch.exp), nn.GroupNorm(5, 5), _Fn(lambda x: -x)],
                         ids=["logsigmoid", "exp", "instance-norm", "neg"])
def test_elementwise_functions_are_the_identity(act):
    model, plain = _net(act), _net(nn.Identity())
    plain.load_state_dict(model.state_dict(), strict=False)
    model_scores, plain_scores = _scores(model), _scores(plain)
    for name in plain_scores:
        torch.testing.assert_close(model_scores[name], plain_scores[name], rtol=1e-12, atol=0)


@pytest.mark.parametrize("act", [_Fn(lambda x: x * torch.sigmoid(x)), _Fn(lambda x: x * x)], ids=["swish", "square"])
def test_a_product_of_two_activations_is_their_sum(act):
    # x * f(x) is linearized around 1 as x + f(x); f is the identity, so the net is the plain one with 2x.
    model, plain = _net(act), _net(nn.Identity())
    plain.load_state_dict(model.state_dict(), strict=False)
    model_scores, plain_scores = _scores(model), _scores(plain)
    for name in plain_scores:
        torch.testing.assert_close(model_scores[name], 2 * plain_scores[name], rtol=1e-12, atol=0)


@pytest.mark.parametrize("act", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1), _Fn(lambda x: torch.softmax(x, 0))],
                         ids=["softmax", "log_softmax", "over-the-batch"])
def test_a_softmax_of_an_activation_is_the_identity(act):
    # exp is an elementwise function (the identity) and the division by its sum a normalization without a scale.
    model, plain = _net(act), _net(nn.Identity())
    plain.load_state_dict(model.state_dict(), strict=False)
    model_scores, plain_scores = _scores(model), _scores(plain)
    for name in plain_scores:
        torch.testing.assert_close(model_scores[name], plain_scores[name], rtol=1e-12, atol=0)


def test_glu_is_the_sum_of_its_halves():
    # glu(h) = a * sigmoid(b) for the halves a, b of h: in the scoring net, a + b.
    model = _net(nn.GLU(), width=6)
    halves = nn.Sequential(nn.Linear(4, 6), _Fn(lambda h: h[:, :3] + h[:, 3:]), nn.Linear(3, 3))
    halves.load_state_dict(model.state_dict())
    model_scores, halves_scores = _scores(model), _scores(halves)
    for name in halves_scores:
        torch.testing.assert_close(model_scores[name], halves_scores[name], rtol=1e-12, atol=0)


@pytest.mark.parametrize(("act", "match"), [
    (_Fn(lambda x: torch.cumsum(x, dim=1)), r"module 1 \(_Fn\) calls cumsum\(\).*no linear stand-in"),
    (_Fn(lambda x: x[:, x.argmax(dim=1)]), r"module 1 \(_Fn\) calls __getitem__\(\).*positions computed from the "
                                           r"input"),
])
def test_ops_without_a_stand_in_are_named(act, match):
    model = _net(act)
    with pytest.raises(PwmprError, match=match):
        pwmp_scores(model, MaskSet.dense(model), (4,))
    with pytest.raises(PwmprError, match=match):
        tau_core(model, MaskSet.dense(model), (4,))


def test_product_with_a_constant_is_still_linear():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scale", torch.tensor([2.0]))

        def forward(self, x):
            return x * self.scale / 4

    model = _net(Scaled())
    scores = pwmp_scores(model, MaskSet.dense(model), (4,))
    plain = _net(nn.Identity())
    plain.load_state_dict(model.state_dict(), strict=False)
    ref = pwmp_scores(plain, MaskSet.dense(plain), (4,))
    torch.testing.assert_close(scores["2.weight"], ref["2.weight"] * 0.5)
