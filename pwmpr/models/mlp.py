"""Multi-layer perceptrons: LeNet-300-100, the classic lottery-ticket MLP."""

from __future__ import annotations

import math

from torch import nn

from pwmpr.models import MODELS


class MLP(nn.Module):
    """Flatten, then Linear-ReLU layers of the given widths, then a Linear classifier."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x)


@MODELS.register("mlp")
def mlp(num_classes: int, input_shape: tuple[int, ...], hidden: tuple[int, ...] = (300, 100)) -> nn.Module:
    """LeNet-300-100 (Lin-Reg fully connected net of the lottery-ticket papers) on flattened inputs."""
    return MLP(math.prod(input_shape), tuple(hidden), num_classes)
