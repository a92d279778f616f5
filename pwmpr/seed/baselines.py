"""The one-shot baselines: uniformly random, global magnitude and iterative SynFlow masks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pwmpr.masks import MaskSet, flatten_layers, prunable
from pwmpr.probe import sum_outputs
from pwmpr.seed.common import SEEDS, check_seed_args, n_target, per_layer_masks, top_k_mask
from pwmpr.surrogate import linear_surrogate, scoring_input


@SEEDS.register("random")
def uniform_masks(model: nn.Module, density: float, input_shape: Sequence[int], seed: int = 0) -> MaskSet:
    """Uniformly random masks keeping exactly ``round(density * n_total)`` weights over all layers together."""
    density, _, gen = check_seed_args(model, density, input_shape, seed)
    params = dict(model.named_parameters())
    names = prunable(model)
    total = sum(params[n].numel() for n in names)
    keep = torch.zeros(total, dtype=torch.bool)
    keep[torch.randperm(total, generator=gen)[: n_target(density, total)]] = True
    return per_layer_masks(keep, names, params)


@SEEDS.register("magnitude")
def magnitude_masks(model: nn.Module, density: float, input_shape: Sequence[int], seed: int = 0) -> MaskSet:
    """Global magnitude masks: the ``round(density * n_total)`` largest ``|w|`` over all layers (``seed`` unused)."""
    density, _, _ = check_seed_args(model, density, input_shape, seed)
    params = dict(model.named_parameters())
    names = prunable(model)
    if not names:
        return MaskSet({})
    scores = flatten_layers({n: params[n].detach().abs().double().cpu() for n in names}, names)
    return per_layer_masks(top_k_mask(scores, n_target(density, scores.numel())), names, params)


@SEEDS.register("synflow")
def synflow_masks(model: nn.Module, density: float, input_shape: Sequence[int], seed: int = 0) -> MaskSet:
    """Iterative SynFlow (Tanaka et al. 2020): 100 rounds pruning to ``density ** (k / 100)``, global scope.

    Scores are ``|theta * dR/dtheta|`` with ``R`` the summed output of the float64 |theta| network on an
    all-ones input: ``pwmpr.surrogate.linear_surrogate``, the PWMP scoring net (weights ``|W| * mask``, biases and
    additive parameters 0, BatchNorm/LayerNorm as positive per-unit scales, activations identities, max pooling
    as average pooling, uniform attention). Deterministic (``seed`` unused).
    """
    density, shape, _ = check_seed_args(model, density, input_shape, seed)
    params = dict(model.named_parameters())
    names = prunable(model)
    if density == 1.0 or not names:
        return MaskSet.dense(model)
    lin = linear_surrogate(model)
    lin_params = dict(lin.named_parameters())
    weights = [lin_params[n].requires_grad_(True) for n in names]
    w0 = [w.detach().clone() for w in weights]
    x = scoring_input(lin, shape, w0[0].device)
    total = sum(w.numel() for w in weights)
    keep = torch.ones(total, dtype=torch.bool)
    for k in range(1, 101):
        with torch.no_grad():
            for w, w_abs, m in zip(weights, w0, keep.split([w.numel() for w in weights]), strict=True):
                w.copy_(w_abs * m.view_as(w_abs).to(w_abs.device))
        # allow_unused: q/k of uniform attention carry no path mass, so they score 0.
        grads = torch.autograd.grad(sum_outputs(lin(x)), weights, allow_unused=True)
        scores = torch.cat(
            [
                (g * w).abs().reshape(-1).cpu() if g is not None else torch.zeros(w.numel(), dtype=torch.float64)
                for g, w in zip(grads, weights, strict=True)
            ]
        )
        scores[~keep] = -1.0  # pruned weights stay pruned, even next to zero-score kept ones
        keep = top_k_mask(scores, n_target(density ** (k / 100), total))
    return per_layer_masks(keep, names, params)
