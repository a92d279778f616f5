"""A small plain conv net (no residuals): three conv-BN-ReLU stages, global average pooling, a classifier."""

from __future__ import annotations

from torch import nn

from pwmpr.models import MODELS


class SmallCNN(nn.Module):
    """conv(16)-pool-conv(32)-pool-conv(64)-GAP-fc; pools are skipped when the map is already tiny."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (16, 32, 64), size: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i < len(widths) - 1 and size >= 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.features(x))))


@MODELS.register("cnn")
def cnn(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Small 3-stage CNN for image inputs ``(C, H, W)``."""
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs input_shape (C, H, W), got {input_shape}")
    return SmallCNN(input_shape[0], num_classes, size=min(input_shape[1:]))
