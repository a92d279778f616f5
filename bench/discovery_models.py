"""Models of the held-out discovery benchmark that are not in pwmpr's registry, handed over as a user would:
``pwmpr grow --model discovery_models:NAME`` with ``bench/`` on ``PYTHONPATH`` (bench/discovery.sh sets it).

Each is ``NAME(num_classes, input_shape)``. They were fixed before the held-out benchmark first ran, and are not
tuned to its results.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ReluMLP(nn.Module):
    """Three hidden layers (256, 128, 64) whose forward calls ``torch.relu``, not ``nn.ReLU`` modules."""

    def __init__(self, n_in: int, num_classes: int, widths: tuple[int, ...] = (256, 128, 64)):
        super().__init__()
        sizes = (n_in, *widths)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.out = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(x, 1)
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.out(h)


def relu_mlp(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A 3-hidden-layer MLP with a functional ReLU, for any input shape (flattened)."""
    return ReluMLP(math.prod(input_shape), num_classes)
