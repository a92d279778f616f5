"""timm's image classifiers as a user would hand them to ``pwmpr grow --model timm_models:NAME``
(bench/reach.py --zoo timm).

``SPECS`` names one small variant of each family that torchvision does not ship or builds differently: NAME ->
(timm name, input side in pixels, extra ``timm.create_model`` arguments). Each NAME is also a factory
``NAME(num_classes, input_shape)`` of this module, untrained (``pretrained=False``). timm is not a pwmpr dependency:
``pip install timm`` first. timm imports torchvision, so pwmpr's torchvision shim runs first (docs: machine notes).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

#: name -> (timm name, input side, extra create_model arguments)
SPECS: dict[str, tuple[str, int, dict]] = {
    "ecaresnet26t": ("ecaresnet26t", 32, {}),
    "seresnet18": ("seresnet18", 32, {}),
    "skresnet18": ("skresnet18", 32, {}),
    "resnest14d": ("resnest14d", 32, {}),
    "cspresnet50": ("cspresnet50", 32, {}),
    "dla46_c": ("dla46_c", 32, {}),
    "dpn48b": ("dpn48b", 32, {}),
    "ghostnet_050": ("ghostnet_050", 32, {}),
    "hrnet_w18_small": ("hrnet_w18_small", 64, {}),
    "inception_next_atto": ("inception_next_atto", 32, {}),
    "levit_128s": ("levit_128s", 64, {"img_size": 64}),
    "mixer_s16": ("mixer_s16_224", 32, {"img_size": 32}),
    "resmlp_12": ("resmlp_12_224", 32, {"img_size": 32}),
    "gmlp_ti16": ("gmlp_ti16_224", 32, {"img_size": 32}),
    "poolformerv2_s12": ("poolformerv2_s12", 32, {}),
    "convmixer_768_32": ("convmixer_768_32", 32, {}),
    "coat_lite_tiny": ("coat_lite_tiny", 32, {"img_size": 32}),
    "crossvit_tiny": ("crossvit_tiny_240", 120, {"img_size": 120}),  # 64/96 px fail in timm itself
    "cait_xxs24": ("cait_xxs24_224", 32, {"img_size": 32}),
    "deit_tiny_distilled": ("deit_tiny_distilled_patch16_224", 32, {"img_size": 32}),
    "xcit_nano_12_p16": ("xcit_nano_12_p16_224", 32, {"img_size": 32}),
    "efficientformerv2_s0": ("efficientformerv2_s0", 64, {"img_size": 64}),
    "mobilevit_xxs": ("mobilevit_xxs", 64, {}),
    "mobileone_s0": ("mobileone_s0", 32, {}),
    "nf_regnet_b0": ("nf_regnet_b0", 32, {}),
    "rexnet_100": ("rexnet_100", 32, {}),
    "tresnet_m": ("tresnet_m", 64, {}),
    "ese_vovnet19b_dw": ("ese_vovnet19b_dw", 32, {}),
    "volo_d1": ("volo_d1_224", 32, {"img_size": 32}),
    "edgenext_xx_small": ("edgenext_xx_small", 64, {}),
    "fastvit_t8": ("fastvit_t8", 64, {}),
    "hgnetv2_b0": ("hgnetv2_b0", 32, {}),
    "tiny_vit_5m": ("tiny_vit_5m_224", 64, {}),  # takes no img_size
    "pit_ti": ("pit_ti_224", 64, {"img_size": 64}),
    "twins_svt_small": ("twins_svt_small", 32, {"img_size": 32}),
    "visformer_tiny": ("visformer_tiny", 32, {"img_size": 32}),
    "sequencer2d_s": ("sequencer2d_s", 32, {"img_size": 32}),
    "beit_base_d2": ("beit_base_patch16_224", 32, {"img_size": 32, "depth": 2}),
    "eva02_tiny": ("eva02_tiny_patch14_224", 28, {"img_size": 28}),
    "focalnet_tiny_srf": ("focalnet_tiny_srf", 32, {}),
    "gcvit_xxtiny": ("gcvit_xxtiny", 64, {"img_size": 64}),
    "maxxvit_rmlp_nano": ("maxxvit_rmlp_nano_rw_256", 64, {"img_size": 64}),
    "davit_tiny": ("davit_tiny", 32, {}),
    "nest_tiny": ("nest_tiny", 32, {"img_size": 32}),
    "convit_tiny": ("convit_tiny", 32, {"img_size": 32}),
    "efficientvit_m0": ("efficientvit_m0", 64, {"img_size": 64}),
    "starnet_s050": ("starnet_s050", 32, {}),
    "mambaout_femto": ("mambaout_femto", 32, {}),
}


def _factory(name: str) -> Callable[[int, tuple[int, ...]], nn.Module]:
    timm_name, _side, kwargs = SPECS[name]

    def build(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        from pwmpr._tv_compat import import_torchvision

        import_torchvision()  # first: the CPU-torch shim timm's torchvision import needs
        import timm

        return timm.create_model(timm_name, pretrained=False, num_classes=num_classes, **kwargs)

    build.__name__ = name
    return build


for _name in SPECS:
    globals()[_name] = _factory(_name)
