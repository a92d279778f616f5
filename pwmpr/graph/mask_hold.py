"""Whether a mask holds in a model's forward: a layer must compute with zeros where its mask removes weights.

A forward that computes the weight it uses from the parameter (weight standardization subtracts the mean; NF-Nets'
and BiT's ``StdConv2d``) turns the zeros the mask writes into nonzero values, so the layer computes densely whatever
the mask says. :func:`check_masks_hold` runs the forward once on the masked weights and refuses such a layer.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pwmpr.errors import PwmprError
from pwmpr.graph.mode import WatchMode, WeightView
from pwmpr.graph.ops import Kind
from pwmpr.probe import input_dtype_of, normalize_input_shape, run_forward, training_mode


class _HoldCheck(WatchMode):
    """Follows the prunable weights through the forward (views, casts, scales) and checks, at each layer that
    computes with one, that every entry the mask removes is still zero."""

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor]) -> None:
        super().__init__(model)
        self.kept = {name: m.detach().bool().flatten().cpu() for name, m in masks.items()}

    def handle(self, op, func, args, kwargs) -> Any:
        out = func(*args, **kwargs)
        views = [(t, v) for t, v in self.tracked(args, kwargs) if isinstance(v, WeightView)]
        if not views:
            return out
        if op.kind is Kind.CONTRACT:
            for t, v in views:
                kept = self.kept.get(v.name)
                if kept is None:
                    continue
                values = t.detach().flatten().cpu()[~kept[v.pos().flatten().cpu()]]
                if bool(torch.isnan(values).any()):
                    raise self.refuse(op, f"the weight it uses is computed from {v.name} and is NaN where the mask "
                                          "removes entries (a norm of a row the mask empties, say)")
                if bool((values != 0).any()):
                    raise self.refuse(op, f"the weight it uses is computed from {v.name} so that entries the mask "
                                          "removes are not zero (a weight standardization or an added term, say): "
                                          "that layer would compute densely whatever its mask")
            return out
        with contextlib.suppress(PwmprError, NotImplementedError):  # a transform it cannot follow: not checked
            self.weight_result(op, func, args, kwargs, out, [v for _, v in views])
        return out


def check_masks_hold(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int]) -> None:
    """Refuse ``masks`` for ``model`` when a layer's forward computes with nonzero values where its mask removes
    weights. ``model`` is left unchanged (a copy runs, in eval mode, on a zero probe)."""
    probe_model = copy.deepcopy(model)
    params = dict(probe_model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))
    shape = normalize_input_shape(input_shape)
    x = torch.zeros((1, *shape), device=next(iter(params.values())).device, dtype=input_dtype_of(probe_model))
    checker = _HoldCheck(probe_model, masks)
    with training_mode(probe_model, False), torch.no_grad(), checker.watching(probe_model):
        run_forward(probe_model, x)
