"""The classification loss for a label per sample or a target per position (next-token prediction).

Logits carry the classes on their last dim: ``(batch, classes)`` or ``(batch, seq, classes)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pwmpr.errors import PwmprError


def per_target(out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (n, classes) and targets (n,) with one row per target: a label per sample as it is, a target per
    position flattened."""
    if y.dim() > 1:
        if out.dim() != y.dim() + 1 or out.shape[:-1] != y.shape:
            raise PwmprError(f"the model returns logits of shape {tuple(out.shape)} for targets of shape "
                             f"{tuple(y.shape)}; a target per position needs logits (batch, seq, classes)")
        return out.reshape(-1, out.shape[-1]), y.reshape(-1)
    return out, y


def cross_entropy(out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy over every target (every position of a sequence), with ``reduction`` over all of them."""
    logits, target = per_target(out, y)
    return F.cross_entropy(logits, target, reduction=reduction)
