"""RigL-style gradient scores ``|dL/dW_eff|`` of every edge, present or absent: the baseline growth rule's score."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet
from pwmpr.probe import class_scores, device_of, training_mode

__all__ = ["gradient_scores"]


@torch.enable_grad()
def gradient_scores(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    batch: tuple[Tensor, Tensor] | Sequence[Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    *,
    train: bool = True,
) -> dict[str, Tensor]:
    """RigL-style scores ``|dL/dW_eff|`` of every entry of every masked weight on one batch (absent entries included).

    Args:
        model: the network; its parameters, buffers (BN running statistics included) and mode are left unchanged.
        batch: ``(x, y)``, moved to the model's device.
        loss_fn: ``loss_fn(output, y) -> scalar``; cross-entropy by default.
        train: score in train mode (batch statistics in BN) or, if False, in eval mode.

    Returns:
        ``{weight name: float64 tensor of the weight's shape}`` on the model's device, all entries >= 0.

    Raises:
        PwmprError: unknown mask names or wrong mask shapes, or a batch that is not ``(x, y)``.
    """
    masks = MaskSet.checked(model, masks)
    if not isinstance(batch, Sequence) or len(batch) != 2 or not all(isinstance(t, Tensor) for t in batch):
        raise PwmprError(f"batch must be a pair of tensors (x, y), got {type(batch).__name__}")
    device = device_of(model)
    x, y = batch[0].to(device), batch[1].to(device)

    params = dict(model.named_parameters())
    leaves = {
        n: (params[n].detach() * masks[n].to(device=device, dtype=params[n].dtype)).requires_grad_(True) for n in masks
    }
    # Clones of the buffers take the in-place running-statistics updates of train-mode BN.
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    with training_mode(model, train):
        loss = loss_fn(class_scores(functional_call(model, {**buffers, **leaves}, (x,))), y)
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {
        n: (g.detach().abs().double() if g is not None else torch.zeros_like(p, dtype=torch.float64))
        for (n, p), g in zip(leaves.items(), grads, strict=True)
    }
