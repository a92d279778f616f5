"""torchvision ResNet-18/50, with a 3x3 stride-1 stem and no max-pool for small (<= 64 px) inputs."""

from __future__ import annotations

from torch import nn

from pwmpr._tv_compat import import_torchvision
from pwmpr.models import MODELS


def _create_tv_resnet(arch: str, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"{arch} needs input_shape (C, H, W), got {input_shape}")
    tv = import_torchvision()
    model = getattr(tv.models, arch)(weights=None, num_classes=num_classes)
    c, h, w = input_shape
    if min(h, w) <= 64:
        # CIFAR-style stem (as in the PHEW / SynFlow ResNet-18): keep resolution in the first stage.
        model.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif c != 3:
        model.conv1 = nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


@MODELS.register("resnet18")
def resnet18(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """torchvision ResNet-18 (11M weights)."""
    return _create_tv_resnet("resnet18", num_classes, input_shape)


@MODELS.register("resnet50")
def resnet50(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """torchvision ResNet-50 (23M weights)."""
    return _create_tv_resnet("resnet50", num_classes, input_shape)
