"""Step 3 of the pipeline (seed -> train -> score -> grow): PWMP scores for every edge, present or absent.

The PWMP score of edge (i, j) is the summed |weight| product of every input->output path through it,
the edge itself left out (docs/method.md, Score): ``F_i * B_j = dR/dW_eff`` in the *linear* |W| network on an
all-ones input, R the sum of the outputs. That network is :func:`pwmpr.surrogate.linear_surrogate`, which
:mod:`pwmpr.taucore` and SynFlow use too. RigL-style gradient scores are in :mod:`pwmpr.gradient_score`.
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
