"""Score: PWMP scores for every edge, present or absent (docs/method.md, Score).

Computed in the linear |W| net of :func:`pwmpr.surrogate.linear_surrogate`; gradient scores are in
:mod:`pwmpr.gradient_score`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from pwmpr.probe import normalize_input_shape
from pwmpr.surrogate import linear_surrogate, path_gradients

__all__ = ["pwmp_scores"]


@torch.enable_grad()  # a caller's no_grad() must not silently turn every score into 0
def pwmp_scores(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int]) -> dict[str, Tensor]:
    """PWMP score ``F_i * B_j`` of every entry of every masked weight, present or absent (docs/method.md, Score).

    Args:
        model: the network; its parameters, buffers and train/eval mode are left unchanged.
        masks: ``{weight name: bool mask}``; a score is returned for each name. Unmasked weights count as dense.
        input_shape: one input without the batch dimension, e.g. ``(3, 32, 32)``.

    Returns:
        ``{weight name: float64 tensor of the weight's shape}`` on the model's device, all entries >= 0.

    Raises:
        PwmprError: unknown mask names or wrong mask shapes, or an ``input_shape`` the model cannot take.
    """
    surrogate = linear_surrogate(model, masks)
    shape = normalize_input_shape(input_shape)

    params = dict(surrogate.named_parameters())
    leaves = [params[n] for n in masks]
    for p in leaves:
        p.requires_grad_(True)
    found = path_gradients(surrogate, leaves, shape)
    if found is None:  # no masked weight reaches the output (e.g. empty masks)
        return {n: torch.zeros_like(p) for n, p in zip(masks, leaves, strict=True)}
    _, grads = found
    return {
        n: (g.detach() if g is not None else torch.zeros_like(p)) for n, p, g in zip(masks, leaves, grads, strict=True)
    }
