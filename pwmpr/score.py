"""Step 3 of the pipeline (seed -> train -> score -> grow): PWMP scores for every edge, present or absent.

The PWMP score of edge (i, j) is the summed |weight| product of every input->output path through it,
the edge itself left out (docs/method.md, Score): ``F_i * B_j = dR/dW_eff`` in the *linear* |W| network on an
all-ones input, R the sum of the outputs. That network is :func:`pwmpr.surrogate.linear_surrogate`, which
:mod:`pwmpr.accounting` (the tau-core) and SynFlow use too. RigL-style gradient scores (:func:`gradient_scores`)
live here as well, as the baseline growth rule's score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet
from pwmpr.probe import device_of, normalize_input_shape, training_mode
from pwmpr.surrogate import linear_surrogate, path_gradients

__all__ = ["gradient_scores", "linear_surrogate", "pwmp_scores"]


@torch.enable_grad()  # a caller's no_grad() must not silently turn every score into 0
def pwmp_scores(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int]) -> dict[str, Tensor]:
    """PWMP score ``F_i * B_j`` of every entry of every masked weight, present or absent (docs/method.md, Score).

    One forward and one backward pass of :func:`pwmpr.surrogate.linear_surrogate` on ``ones(1, *input_shape)`` in
    float64; the gradient is taken with respect to the effective weights ``|W| * mask`` themselves, so an absent edge
    gets the path sum it would carry with weight 1. For a Conv weight the score sums over the spatial positions
    where the kernel entry is used. Scores are exact also for edges into units with no incoming edge (the
    scoring net is linear). For present edges SynFlow's score is ``|W| * PWMP``. Where a deep net's path sums
    would overflow float64, every score is scaled by one common power of two (``path_gradients``).

    Args:
        model: the network; its parameters, buffers and train/eval mode are left unchanged.
        masks: ``{weight name: bool mask}``; a score is returned for each of these names. Prunable weights
            without a mask count as dense.
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


@torch.enable_grad()
def gradient_scores(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    batch: tuple[Tensor, Tensor] | Sequence[Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    *,
    train: bool = True,
) -> dict[str, Tensor]:
    """RigL-style scores ``|dL/dW_eff|`` of every entry of every masked weight on one batch.

    The gradient is taken with respect to the effective weight ``W * mask``, so absent entries get their dense
    gradient (what RigL grows by). The model runs with its own signs, biases and nonlinearities.

    Args:
        model: the network; its parameters, buffers (BN running statistics included) and mode are left unchanged.
        masks: ``{weight name: bool mask}``; a score is returned for each of these names.
        batch: ``(x, y)``, moved to the model's device.
        loss_fn: ``loss_fn(output, y) -> scalar``; cross-entropy by default.
        train: score in train mode (batch statistics in BN, as during training) or, if False, in eval mode.

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
        loss = loss_fn(functional_call(model, {**buffers, **leaves}, (x,)), y)
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {
        n: (g.detach().abs().double() if g is not None else torch.zeros_like(p, dtype=torch.float64))
        for (n, p), g in zip(leaves.items(), grads, strict=True)
    }
