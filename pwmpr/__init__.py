"""pwmpr: grow sparse networks from a PHEW seed (PWMPR, arXiv 2509.25665) and ship what they find.

Pipeline: seed -> train -> score -> grow -> stop -> export. This module only re-exports the public API.
"""

__version__ = "0.1.0"

from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet, prunable
from pwmpr.models import MODELS, create_model, list_models

__all__ = ["MODELS", "MaskSet", "PwmprError", "__version__", "create_model", "list_models", "prunable"]
