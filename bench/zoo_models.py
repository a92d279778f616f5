"""Every classifier torchvision ships, as a user would hand it to ``pwmpr grow --model zoo_models:NAME``.

``ZOO`` names the 20 classifiers at the input side they need (32 px where the model allows it, 64 px for AlexNet's
pooling, MaxViT's full widths with 2x2 partitions so that 64 px fits). ``REDUCED`` builds the same code paths at a
reduced width through torchvision's own constructors, for tests on two CPU cores. Each name is also a factory
``NAME(num_classes, input_shape)`` of this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pwmpr._tv_compat import import_torchvision


def _builder(name: str, **kwargs: Any) -> Callable[[int, tuple[int, ...]], nn.Module]:
    def build(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        tv = import_torchvision()
        extra = {"image_size": input_shape[-1]} if name.startswith("vit_") else {}
        return getattr(tv.models, name)(weights=None, num_classes=num_classes, **kwargs, **extra)

    return build


def _maxvit(stem: int, channels: list[int], layers: list[int], head_dim: int):
    def build(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        import_torchvision()  # first: the CPU-torch shim
        from torchvision.models.maxvit import MaxVit
        return MaxVit(input_size=tuple(input_shape[-2:]), stem_channels=stem, partition_size=2,
                      block_channels=channels, block_layers=layers, head_dim=head_dim, stochastic_depth_prob=0.2,
                      num_classes=num_classes)

    return build


#: name -> (input side in pixels, factory(num_classes, input_shape))
ZOO: dict[str, tuple[int, Callable[[int, tuple[int, ...]], nn.Module]]] = {
    **{name: (32, _builder(name)) for name in (
        "resnet18", "resnet50", "wide_resnet50_2", "vgg11_bn", "resnext50_32x4d", "mobilenet_v2",
        "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "regnet_y_400mf", "shufflenet_v2_x0_5",
        "mnasnet0_5", "squeezenet1_1", "densenet121", "convnext_tiny", "vit_b_16", "swin_t")},
    "alexnet": (64, _builder("alexnet")),
    "googlenet": (32, _builder("googlenet", aux_logits=False, init_weights=True)),
    "maxvit_t": (64, _maxvit(64, [64, 128, 256, 512], [2, 2, 5, 2], 32)),
}


def _reduced_vit(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    import_torchvision()  # first: the CPU-torch shim
    from torchvision.models.vision_transformer import VisionTransformer
    return VisionTransformer(image_size=input_shape[-1], patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                             mlp_dim=64, num_classes=num_classes)


def _reduced_swin(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    import_torchvision()  # first: the CPU-torch shim
    from torchvision.models.swin_transformer import SwinTransformer
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                           num_classes=num_classes)


def _reduced_convnext(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    import_torchvision()  # first: the CPU-torch shim
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=num_classes)


#: Reduced widths of the same code paths: name -> (input side, factory), one per operation the zoo adds.
REDUCED: dict[str, tuple[int, Callable[[int, tuple[int, ...]], nn.Module]]] = {
    "mobilenet_v3_reduced": (32, _builder("mobilenet_v3_small", width_mult=0.25)),  # depthwise, SE gate, hardswish
    "shufflenet_v2_x0_5": ZOO["shufflenet_v2_x0_5"],  # chunk, concat, channel shuffle
    "squeezenet1_1": ZOO["squeezenet1_1"],  # concat of two branches
    "regnet_x_400mf": ZOO["regnet_x_400mf"],  # grouped convolutions
    "convnext_reduced": (32, _reduced_convnext),  # channels-last blocks, functional layer norm, layer scale
    "vit_reduced": (32, _reduced_vit),  # nn.MultiheadAttention (packed in_proj_weight), class token
    "swin_reduced": (32, _reduced_swin),  # shifted-window attention: pad, roll, window partition, masks
    "maxvit_reduced": (64, _maxvit(16, [16, 32], [1, 1], 8)),  # einsum attention, grid partition, SE
}

for _name, (_, _factory) in {**ZOO, **REDUCED}.items():
    globals()[_name] = _factory


# -- models with an operation pwmpr has no rule for: the refusals the README quotes --------------------------------
class _Refused(nn.Module):
    """Conv stem, then ``op`` on its 8 channels, then a linear head: ``op`` is the only thing pwmpr cannot follow."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], op: Callable, extra: nn.Module | None = None):
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], 8, 3, padding=1)
        self.op, self.extra = op, extra
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        h = self.stem(x).mean((2, 3))  # (N, 8)
        return self.head(self.op(self, h))


def _recurrent(self: _Refused, h):
    return self.extra(h.unsqueeze(1))[0][:, -1]


#: name -> (what it does, factory(num_classes, input_shape)): each uses one op that has no rule (docs/method.md).
REFUSED: dict[str, tuple[str, Callable[[int, tuple[int, ...]], nn.Module]]] = {
    "refused_fft": ("a Fourier transform over the features (FNet's token mixing)",
                    lambda n, s: _Refused(n, s, lambda self, h: torch.fft.fft(h, dim=1).real)),
    "refused_cumsum": ("a cumulative sum over the features",
                       lambda n, s: _Refused(n, s, lambda self, h: h.cumsum(dim=1))),
    "refused_index": ("indexing with positions computed from the input",
                      lambda n, s: _Refused(n, s, lambda self, h: h[:, h.argsort(dim=1)[0]])),
    "refused_lstm": ("a recurrent layer (nn.LSTM)", lambda n, s: _Refused(n, s, _recurrent, nn.LSTM(8, 8,
                                                                                                     batch_first=True))),
}

for _name, (_, _factory) in REFUSED.items():
    globals()[_name] = _factory
