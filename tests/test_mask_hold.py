"""A mask must hold in the forward: a layer that computes its weight from the parameter so that removed entries
come back nonzero (weight standardization) is refused; transforms that keep zeros (a scale, weight norm) pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pwmpr.errors import PwmprError
from pwmpr.graph.mask_hold import check_masks_hold


class StdConv(nn.Conv2d):
    """Weight standardization (Qiao et al. 2019; NF-Nets' and BiT's StdConv2d): zero mean, unit variance per
    output channel, computed in the forward."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class NormConv(nn.Conv2d):
    """Weight normalization: each output channel's weight over its norm, times a gain (zeros stay zero)."""

    def forward(self, x):
        w = self.weight * (2.0 / self.weight.flatten(1).norm(dim=1).clamp_min(1e-8)).view(-1, 1, 1, 1)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def _net(conv: type[nn.Conv2d]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def _masks(net: nn.Module) -> dict[str, torch.Tensor]:
    conv = torch.zeros(4, 1, 3, 3, dtype=torch.bool)
    conv[:, 0, 1, 1] = True  # each channel keeps its centre weight
    return {"0.weight": conv, "4.weight": torch.ones(2, 4, dtype=torch.bool)}


def test_weight_standardization_undoes_the_mask_and_is_refused_at_the_start():
    from pwmpr.masks import MaskSet
    from pwmpr.runner import check_start_masks

    net = _net(StdConv)
    with pytest.raises(PwmprError, match=r"module 0 \(StdConv\) calls conv2d\(\) in its forward: the weight it uses "
                                         r"is computed from 0.weight so that entries the mask removes are not zero"):
        check_start_masks(net, MaskSet(_masks(net)), (1, 5, 5))  # the check every run's start makes
    assert bool((net[0].weight != 0).all())  # the model itself is left as it was


@pytest.mark.parametrize("conv", [nn.Conv2d, NormConv])
def test_a_plain_or_weight_normalized_layer_holds_its_mask(conv):
    net = _net(conv)
    check_masks_hold(net, _masks(net), (1, 5, 5))


class RawNormConv(nn.Conv2d):
    """Weight normalization without a floor: a row the mask empties divides 0 by 0."""

    def forward(self, x):
        w = self.weight / self.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def test_a_weight_that_turns_nan_where_the_mask_empties_a_row_is_refused_as_such():
    net = _net(RawNormConv)
    masks = _masks(net)
    masks["0.weight"][0] = False  # channel 0 keeps no weight: its norm is 0
    with pytest.raises(PwmprError, match="is NaN where the mask removes entries"):
        check_masks_hold(net, masks, (1, 5, 5))
