"""A small plain conv net (no residuals): three conv-BN-ReLU stages, global average pooling, a classifier; 2-d for
images ``(C, H, W)``, 1-d for signals ``(C, L)`` (time series, spectra, audio)."""

from __future__ import annotations

from torch import nn

from pwmpr.models import MODELS

#: spatial dims -> (conv, batch norm, max pool, adaptive average pool)
_LAYERS = {1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d),
           2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)}


class SmallCNN(nn.Module):
    """conv(16)-pool-conv(32)-pool-conv(64)-GAP-fc; pools are skipped when the map is already tiny."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (16, 32, 64), size: int = 32,
                 dims: int = 2):
        super().__init__()
        conv, norm, pool, gap = _LAYERS[dims]
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [conv(c, w, 3, padding=1, bias=False), norm(w), nn.ReLU()]
            if i < len(widths) - 1 and size >= 8:
                layers.append(pool(2))
                size //= 2
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = gap(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, (conv, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.features(x))))


@MODELS.register("cnn")
def cnn(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Small 3-stage CNN for images ``(C, H, W)`` (2-d convolutions) or signals ``(C, L)`` (1-d convolutions)."""
    if len(input_shape) not in (2, 3):
        raise ValueError(f"cnn needs input_shape (C, H, W) or (C, L), got {input_shape}")
    return SmallCNN(input_shape[0], num_classes, size=min(input_shape[1:]), dims=len(input_shape) - 1)
