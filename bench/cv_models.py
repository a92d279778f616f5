"""pytorchcv's image classifiers as a user would hand them to ``pwmpr grow --model cv_models:NAME``
(bench/reach.py --zoo pytorchcv).

pytorchcv (imgclsmob) is a third zoo, written by other hands than torchvision's, timm's or transformers': each
family is its own implementation, with its own ways of writing a forward (operands passed by keyword, zero-padded
shortcuts, recurrent attention). ``SPECS`` names one small member of each family: NAME ->
(pytorchcv name, input side in pixels). The CIFAR families take 32 pixels; the ImageNet ones the smallest side their
fixed pooling allows. Each NAME is also a factory ``NAME(num_classes, input_shape)`` of this module, untrained
(``pretrained=False``). pytorchcv is not a pwmpr dependency: ``pip install pytorchcv`` first. It imports torchvision,
so pwmpr's torchvision shim runs first (docs: machine notes).
"""

from __future__ import annotations

from _factories import add_factories
from torch import nn

#: name -> (pytorchcv name, input side)
SPECS: dict[str, tuple[str, int]] = {
    # CIFAR families
    "nin": ("nin_cifar10", 32),
    "resnet20": ("resnet20_cifar10", 32),
    "preresnet20": ("preresnet20_cifar10", 32),
    "resnext20": ("resnext20_16x4d_cifar10", 32),
    "seresnet20": ("seresnet20_cifar10", 32),
    "densenet40": ("densenet40_k12_cifar10", 32),
    "xdensenet40": ("xdensenet40_2_k24_bc_cifar10", 32),  # convolutions called with keyword operands
    "wrn20_1bit": ("wrn20_10_1bit_cifar10", 32),  # binary weights (a custom autograd Function), zero-padded shortcuts
    "ror3_56": ("ror3_56_cifar10", 32),
    "rir": ("rir_cifar10", 32),
    "msdnet22": ("msdnet22_cifar10", 32),
    "resdropresnet20": ("resdropresnet20_cifar10", 32),
    "shakeshake20": ("shakeshakeresnet20_2x16d_cifar10", 32),
    "shakedrop20": ("shakedropresnet20_cifar10", 32),
    "diaresnet20": ("diaresnet20_cifar10", 32),  # an LSTM cell's attention, its state started from zeros_like
    "pyramidnet110": ("pyramidnet110_a48_cifar10", 32),
    # ImageNet families
    "resnestabc14": ("resnestabc14", 32),
    "regnetx002": ("regnetx002", 32),
    "regnety002": ("regnety002", 32),
    "resneta10": ("resneta10", 32),
    "isqrtcovresnet18": ("isqrtcovresnet18", 32),  # covariance pooling
    "dicenet_wd5": ("dicenet_wd5", 32),  # convolutions over the channel dim
    "scnet50": ("scnet50", 128),
    "squeezenet_v1_1": ("squeezenet_v1_1", 224),
    "sqnxt23_w1": ("sqnxt23_w1", 224),
    "shufflenet_g1_wd4": ("shufflenet_g1_wd4", 224),
    "menet108": ("menet108_8x1_g3", 224),
    "fdmobilenet_wd4": ("fdmobilenet_wd4", 224),
    "igcv3_wd4": ("igcv3_wd4", 224),
    "mnasnet_small": ("mnasnet_small", 224),
    "espnetv2_wd2": ("espnetv2_wd2", 224),
    "hardnet39ds": ("hardnet39ds", 224),
    "vovnet27s": ("vovnet27s", 224),
    "darknet_tiny": ("darknet_tiny", 224),
    "octresnet10": ("octresnet10_ad2", 224),  # octave convolutions
    "condensenet74": ("condensenet74_c4_g4", 224),  # learned group convolutions
    "channelnet": ("channelnet", 224),  # a 3-d convolution over the channels
    "bam_resnet18": ("bam_resnet18", 224),
    "diracnet18v2": ("diracnet18v2", 224),
}


def build(name: str, num_classes: int) -> nn.Module:
    """Model ``name`` of ``SPECS``, untrained, with ``num_classes`` outputs (for its input side where it asks)."""
    from pwmpr._tv_compat import import_torchvision

    import_torchvision()  # first: the CPU-torch shim pytorchcv's torchvision import needs
    from pytorchcv.model_provider import get_model

    cv_name, side = SPECS[name]
    try:
        return get_model(cv_name, pretrained=False, num_classes=num_classes, in_size=(side, side))
    except TypeError as err:  # a family whose size is fixed takes no in_size
        if "in_size" not in str(err):
            raise
        return get_model(cv_name, pretrained=False, num_classes=num_classes)


add_factories(globals(), SPECS, build)
