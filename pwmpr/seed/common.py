"""The seed registry (``SEEDS``) and the argument checks and mask helpers every seed shares."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pwmpr.counting import round_half_up
from pwmpr.errors import PwmprError
from pwmpr.graph.reach import check_density_keeps_every_layer
from pwmpr.masks import MaskSet, split_layers
from pwmpr.probe import check_input_shape, normalize_input_shape, training_mode
from pwmpr.registry import Registry

SeedFactory = Callable[[nn.Module, float, Sequence[int], int], MaskSet]
SEEDS: Registry[SeedFactory] = Registry("seed method")


def check_seed_args(
    model: nn.Module, density: float, input_shape: Sequence[int], seed: int, probe: bool = True
) -> tuple[float, tuple[int, ...], torch.Generator]:
    """Validate the common arguments (a density too low to keep an edge per layer too); return the density as a
    float, the shape as a tuple and a seeded generator.

    ``probe``: run the model once on the shape (False where the caller's own forward pass checks it).
    """
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0.0 < float(density) <= 1.0:
        raise PwmprError(f"density must be a number in (0, 1], got {density!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**63:
        raise PwmprError(f"seed must be a non-negative integer, got {seed!r}")
    check_density_keeps_every_layer(model, float(density))
    shape = normalize_input_shape(input_shape)
    if probe:
        # check_input_shape restores only the top-level flag; keep mixed train/eval states as they were.
        with training_mode(model, model.training):
            check_input_shape(model, shape)
    return float(density), shape, torch.Generator().manual_seed(int(seed))


def n_target(density: float, total: int) -> int:
    """Number of weights a density keeps: ``density * total`` rounded halves up, at least 1."""
    return min(total, max(1, round_half_up(density * total)))


def top_k_mask(scores: Tensor, k: int) -> Tensor:
    """Bool mask of the ``k`` largest scores (exactly ``k``)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.topk(scores, k, sorted=False).indices] = True
    return keep


def per_layer_masks(keep: Tensor, names: list[str], params: dict[str, Tensor]) -> MaskSet:
    """Cut a flat bool vector over the prunable weights (in ``names`` order) into per-layer masks."""
    return MaskSet({n: m.to(params[n].device) for n, m in split_layers(keep, params, names).items()})
