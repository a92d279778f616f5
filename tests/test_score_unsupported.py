"""A layer the PWMP scoring surrogate cannot linearize gives an error naming the module, never a wrong score."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pwmpr import MaskSet, PwmprError, pwmp_scores, tau_core


class _Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class _Square(nn.Module):
    def forward(self, x):
        return x * x


class _Exp(nn.Module):
    def forward(self, x):
        return torch.exp(x)


def _net(act: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5), act, nn.Linear(5, 3))


@pytest.mark.parametrize(("act", "match"), [
    (nn.Softmax(dim=1), "module Softmax"),
    (nn.LogSigmoid(), "module LogSigmoid"),
    (nn.GLU(), "module GLU"),
    (_Swish(), r"module 1 \(_Swish\) calls sigmoid\(\)"),
    (_Square(), r"module 1 \(_Square\) multiplies two activations"),
    (_Exp(), r"module 1 \(_Exp\) calls exp\(\)"),
])
def test_unsupported_layer_is_named(act, match):
    model = _net(act)
    with pytest.raises(PwmprError, match=match):
        pwmp_scores(model, MaskSet.dense(model), (4,))
    with pytest.raises(PwmprError, match=match):
        tau_core(model, MaskSet.dense(model), (4,))


def test_instance_norm_without_parameters_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.InstanceNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with pytest.raises(PwmprError, match="InstanceNorm2d"):
        pwmp_scores(model, MaskSet.dense(model), (1, 6, 6))


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
