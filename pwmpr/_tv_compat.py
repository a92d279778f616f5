"""Import torchvision on a CPU-only torch: the one compat shim, used wherever torchvision is needed.

The CUDA-linked torchvision wheel fails to import on CPU torch (``operator torchvision::nms does not exist``);
defining the ``nms`` and ``qnms`` schemas first fixes that. It runs only when the plain import fails.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from pwmpr.errors import PwmprError

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_lib = None  # keeps the schema library alive for the life of the process


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, defining the missing op schemas on a CPU-only torch."""
    global _lib
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError:
        raise PwmprError("torchvision is not installed: pip install 'torchvision==0.28.0'") from None
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if _lib is None:
        _lib = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _lib.define(schema)
    return importlib.import_module("torchvision")
