"""pwmpr: grow sparse networks from a PHEW seed (PWMPR, arXiv 2509.25665) and ship what they find.

Re-exports the public API lazily (PEP 562); the layers are in docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "FlopCount": "pwmpr.cost", "training_flops": "pwmpr.cost",  # metrics
    "TauCore": "pwmpr.taucore", "tau_core": "pwmpr.taucore",
    "PwmprError": "pwmpr.errors",
    "load": "pwmpr.export.safetensors_io",  # (model, masks) back from a run or export folder
    "grow_module": "pwmpr.api",  # any nn.Module on the user's own data
    "GROWTH_RULES": "pwmpr.growth", "grow": "pwmpr.growth",  # 4 grow
    "MaskSet": "pwmpr.masks", "prunable": "pwmpr.masks",
    "MODELS": "pwmpr.models", "create_model": "pwmpr.models", "list_models": "pwmpr.models",
    "gradient_scores": "pwmpr.gradient_score", "pwmp_scores": "pwmpr.score",  # 3 score
    "SEEDS": "pwmpr.seed", "phew_masks": "pwmpr.seed",  # 1 seed
    "STOP_RULES": "pwmpr.stop", "Observation": "pwmpr.stop", "StopContext": "pwmpr.stop",
    "StopDecision": "pwmpr.stop", "growth_stop": "pwmpr.stop", "plateau_reached": "pwmpr.stop",  # 5 stop
    "curve_posterior": "pwmpr.stop", "SaturationFit": "pwmpr.stop", "fit_saturation": "pwmpr.stop",
    "should_stop": "pwmpr.stop",  # the paper's rule
}  # fmt: skip


def export_grown(grown, out=None, *, model=None, **options):
    """Export a :func:`grow_module` result (or a run folder, with ``model=``) like ``pwmpr export``; return the report.

    ``out`` defaults to ``RUN_DIR/export``; options are those of ``pwmpr.export.pipeline.export_artifact``.
    """
    from pathlib import Path

    from pwmpr.export.pipeline import export_run

    if hasattr(grown, "run_dir") and hasattr(grown, "model"):
        run_dir, model = grown.run_dir, grown.model if model is None else model
    else:
        run_dir = Path(grown)
    return export_run(run_dir, out, model=model, **options)


__all__ = [
    "GROWTH_RULES", "MODELS", "SEEDS", "STOP_RULES", "FlopCount", "MaskSet", "Observation", "PwmprError",
    "SaturationFit", "StopContext", "StopDecision", "TauCore", "__version__", "create_model", "curve_posterior",
    "export_grown", "fit_saturation", "gradient_scores", "grow", "grow_module", "growth_stop", "list_models", "load",
    "phew_masks", "plateau_reached", "prunable", "pwmp_scores", "should_stop", "tau_core", "training_flops",
]


def __getattr__(name: str) -> Any:
    """The public name ``name``, imported from its module on first use (then cached here)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names and every public name, loaded or not."""
    return sorted(set(globals()) | set(_EXPORTS))
