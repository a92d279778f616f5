"""pwmpr: grow sparse networks from a PHEW seed (PWMPR, arXiv 2509.25665) and ship what they find.

Pipeline: seed -> train -> score -> grow -> stop -> export. This module only re-exports the public API.
"""

__version__ = "0.1.0"

from pwmpr.accounting import FlopCount, TauCore, tau_core, training_flops  # metrics
from pwmpr.errors import PwmprError
from pwmpr.grow import GROWTH_RULES, grow  # 4 grow
from pwmpr.masks import MaskSet, prunable
from pwmpr.models import MODELS, create_model, list_models
from pwmpr.score import gradient_scores, pwmp_scores  # 3 score
from pwmpr.seed import SEEDS, phew_masks  # 1 seed
from pwmpr.stop import SaturationFit, StopDecision, fit_saturation, plateau_reached, should_stop  # 5 stop


def load(path, *, trust_remote_code: bool = False):
    """Rebuild ``(model, masks)`` from a run folder, an export folder or one of their safetensors files.

    A ``package.module:function`` model is imported only with ``trust_remote_code=True`` (importing runs code).
    See ``pwmpr.export.safetensors_io.load``; imported on first use so ``import pwmpr`` stays light.
    """
    from pwmpr.export.safetensors_io import load as _load

    return _load(path, trust_remote_code=trust_remote_code)


def grow_module(model, train, **kwargs):
    """Grow ``model`` (any nn.Module) on your own data through the pwmpr runner; see :func:`pwmpr.api.grow_module`."""
    from pwmpr.api import grow_module as _grow_module

    return _grow_module(model, train, **kwargs)


__all__ = [
    "GROWTH_RULES", "MODELS", "SEEDS", "FlopCount", "MaskSet", "PwmprError", "SaturationFit", "StopDecision", "TauCore",
    "__version__", "create_model", "fit_saturation", "gradient_scores", "grow", "grow_module", "list_models", "load",
    "phew_masks",
    "plateau_reached", "prunable", "pwmp_scores", "should_stop", "tau_core", "training_flops",
]
