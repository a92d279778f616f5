"""Whether a mask set leaves a network that can compute anything: an edge in every layer, a path from input to output.

Both checks refuse with a :class:`PwmprError` that says what to raise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from pwmpr.counting import round_half_up
from pwmpr.errors import PwmprError
from pwmpr.graph.trace import build_unit_graph
from pwmpr.graph.units import UnitGraph
from pwmpr.masks import prunable
from pwmpr.probe import normalize_input_shape


def min_density(n_layers: int, n_total: int) -> float:
    """The smallest density, rounded up to 3 significant digits, whose weight count covers ``n_layers`` layers."""
    need = (n_layers - 0.5) / n_total  # round_half_up(d * n_total) >= n_layers from here on
    scale = 10 ** (math.floor(math.log10(need)) - 2)
    return math.ceil(need / scale) * scale


def check_density_keeps_every_layer(model: nn.Module, density: float, what: str = "density") -> None:
    """Refuse ``density`` when it keeps fewer weights of ``model`` than it has prunable layers (one is left empty)."""
    params = dict(model.named_parameters())
    names = [n for n in prunable(model) if n in params]
    total = sum(params[n].numel() for n in names)
    if not names or total == 0:
        return
    kept = round_half_up(float(density) * total)
    if kept < len(names):
        raise PwmprError(
            f"{what} {density:g} keeps {kept:,} of the {total:,} prunable weights, fewer than the model's "
            f"{len(names)} prunable layers: a layer with no edge leaves no input-to-output path; use a density of "
            f"at least {min_density(len(names), total):.3g}")


def check_input_reaches_output(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int],
                               what: str = "the starting masks") -> None:
    """Refuse ``masks`` when no enabled path leads from an input unit of ``model`` to an output unit.

    A model whose unit graph cannot be read is not checked.
    """
    if input_reaches_output(model, masks, input_shape) is False:
        raise no_path_error(masks, what)


def no_path_error(masks: Mapping[str, Tensor], what: str) -> PwmprError:
    """The refusal of ``masks`` (named ``what``) that keep weights but no input-to-output path."""
    n_on = sum(int(m.bool().sum()) for m in masks.values())
    return PwmprError(f"{what} keep {n_on:,} weight(s) but no path from an input to an output through them: "
                      "the network computes nothing from its input; raise the density")


def input_reaches_output(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int]) -> bool | None:
    """Whether an enabled path leads from an input unit of ``model`` to an output unit; None when its unit graph
    cannot be read."""
    try:
        graph = build_unit_graph(model, normalize_input_shape(input_shape))
    except PwmprError:
        return None
    return has_path(graph, masks)


def has_path(graph: UnitGraph, masks: Mapping[str, Tensor]) -> bool:
    """Whether some output unit of ``graph`` is reached from an input unit through weights ``masks`` enable."""
    reached, _ = graph.live_units(masks)
    return bool(reached[graph.output].any())
