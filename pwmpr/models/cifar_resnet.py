"""OpenLTH-style CIFAR ResNets (He et al. 2016, sec. 4.2): resnet20/32/56, width 16, 1x1 conv shortcuts.

Mirrors facebookresearch/open_lth ``models/cifar_resnet.py``: depth N = 6D + 2, three stages of D basic
blocks at widths W, 2W, 4W, a 1x1 conv + BN shortcut wherever the shape changes, kaiming-normal init.
"""

from __future__ import annotations

from torch import nn

from pwmpr.models import MODELS


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus an identity or 1x1 conv-BN shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        if downsample or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv, three stages of ``depth_per_stage`` basic blocks, global average pooling, fc."""

    def __init__(self, depth_per_stage: int, num_classes: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        blocks: list[nn.Module] = []
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for b in range(depth_per_stage):
                blocks.append(BasicBlock(c_in, c_out, downsample=stage > 0 and b == 0))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(self.flatten(self.pool(x)))


def _create_cifar_resnet(depth: int, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"CIFAR ResNets need input_shape (C, H, W), got {input_shape}")
    return CifarResNet((depth - 2) // 6, num_classes, in_channels=input_shape[0])


@MODELS.register("resnet20")
def resnet20(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """CIFAR ResNet-20 (0.27M weights)."""
    return _create_cifar_resnet(20, num_classes, input_shape)


@MODELS.register("resnet32")
def resnet32(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """CIFAR ResNet-32 (0.46M weights), the paper's CIFAR model."""
    return _create_cifar_resnet(32, num_classes, input_shape)


@MODELS.register("resnet56")
def resnet56(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """CIFAR ResNet-56 (0.85M weights)."""
    return _create_cifar_resnet(56, num_classes, input_shape)
