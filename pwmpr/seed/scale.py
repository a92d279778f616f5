"""How a sparse start's kept weights are scaled (``--init-scale``; docs/method.md, "Seed").

``INIT_SCALES`` maps a name to a rule ``(weights, masks) -> None`` that rescales, in place, the weights (a mapping
from parameter name to tensor: a model's parameters or a state dict) that ``masks`` covers, before the masks zero
the absent edges:

* ``keep`` (the paper's): every kept weight keeps its initial value;
* ``fan-in``: each unit's incoming weights times sqrt(n / k), ``n`` its dense fan-in and ``k`` the edges the mask
  keeps into it, so that a sparse unit starts with the pre-activation variance its initialisation gave the dense
  one (Evci et al. 2022, "Gradient Flow in Sparse Neural Networks and How Lottery Tickets Win").

A unit is a row of a masked weight (an output channel of a Conv, an output feature of a Linear, a row of an
attention input projection): the rules see every weight with its outputs along dimension 0 (a matrix applied as
``x @ W + b``, GPT-2's ``Conv1D``, is handed to them transposed, ``pwmpr.masks.unit_axis``). A masked
weight missing from ``weights`` is left alone: ``scale_model`` leaves out frozen parameters, which training could not
bring back from a scaling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from pwmpr.masks import MaskSet, unit_axis
from pwmpr.registry import Registry

InitScale = Callable[[Mapping[str, Tensor], MaskSet], None]
INIT_SCALES: Registry[InitScale] = Registry("init scale")


@INIT_SCALES.register("keep")
def keep_values(weights: Mapping[str, Tensor], masks: MaskSet) -> None:
    """Kept weights keep their initial values (nothing changes)."""


def fan_in_factors(mask: Tensor) -> Tensor:
    """Per unit (row of ``mask``), sqrt(dense fan-in / kept fan-in); 1 for a unit the mask keeps no edge into."""
    rows = mask.reshape(mask.shape[0], -1)
    kept = rows.sum(dim=1, dtype=torch.float64)
    return torch.where(kept > 0, (rows.shape[1] / kept.clamp(min=1)).sqrt(), torch.ones_like(kept))


@INIT_SCALES.register("fan-in")
def scale_to_fan_in(weights: Mapping[str, Tensor], masks: MaskSet) -> None:
    """Each masked weight's rows times sqrt(dense fan-in / kept fan-in) (``fan_in_factors``), in place."""
    with torch.no_grad():
        for name, mask in masks.items():
            weight = weights.get(name)
            if weight is None:
                continue
            factors = fan_in_factors(mask.cpu()).to(weight.device, weight.dtype)  # float64 on the host
            weight.mul_(factors.view(-1, *([1] * (weight.dim() - 1))))


def trainable_names(model: nn.Module) -> dict[str, list[str]]:
    """Each trainable parameter's name (``named_parameters``' first) -> every name it has (a module held twice
    has two)."""
    first: dict[int, str] = {}
    names: dict[str, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.requires_grad:
            names.setdefault(first.setdefault(id(p), name), []).append(name)
    return names


def _units_first(model: nn.Module, weights: dict[str, Tensor], masks: MaskSet
                 ) -> tuple[dict[str, Tensor], MaskSet]:
    """``weights`` and ``masks`` with each weight whose outputs run along dim 1 seen transposed (views: scaling
    them scales the weights)."""
    flipped = {n for n in masks if n in weights and unit_axis(model, n) == 1}
    if not flipped:
        return weights, masks
    return ({n: w.T if n in flipped else w for n, w in weights.items()},
            MaskSet({n: m.T.contiguous() if n in flipped else m for n, m in masks.items()}))


def scale_model(model: nn.Module, masks: MaskSet, rule: str) -> None:
    """Scale ``model``'s trainable kept weights for ``masks`` by the init-scale ``rule``, in place."""
    INIT_SCALES.get(rule)(*_units_first(model, {n: p for n, p in model.named_parameters() if p.requires_grad},
                                        masks))


def scaled_state(model: nn.Module, state: Mapping[str, Tensor], masks: MaskSet, rule: str) -> dict[str, Tensor]:
    """A copy of ``state`` (a state dict of ``model``) with its trainable weights scaled for ``masks`` by the
    init-scale ``rule``, under every name each of them has."""
    out = {k: v.detach().clone() for k, v in state.items()}
    trainable = trainable_names(model)
    INIT_SCALES.get(rule)(*_units_first(model, {n: out[n] for n in trainable if n in out}, masks))
    for name, aliases in trainable.items():
        for alias in aliases[1:]:
            if name in out and alias in out:
                out[alias] = out[name]
    return out
