"""Reading a model's unit graph from one real forward pass (docs/method.md, Seed and "Operations").

Every activation carries a *shadow* of unit ids through data movement; weight uses become links, elementwise
ops on two activations and attention become merges. The rules by op family are in ``trace_activations``,
``trace_contract`` and ``trace_attention``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pwmpr.errors import PwmprError
from pwmpr.graph.builder import GroupBuilder
from pwmpr.graph.mode import WatchMode, WeightView, tensors_in
from pwmpr.graph.ops import CASTS, SHAPE_ONLY, Kind, Op
from pwmpr.graph.shadow import DATA, MARKERS, Data, LayoutError, SignalLayout, Units, along, unit_vector
from pwmpr.graph.trace_activations import ActivationRules
from pwmpr.graph.trace_attention import AttentionRules
from pwmpr.graph.trace_contract import ContractionRules
from pwmpr.graph.units import AttentionSite, UnitGraph
from pwmpr.probe import class_scores, device_of, input_dtype_of, run_forward, training_mode


def build_unit_graph(model: nn.Module, input_shape: Sequence[int]) -> UnitGraph:
    """Run ``model`` once (eval, no grad, left unchanged) on a zero probe of ``input_shape``; read its unit graph.

    Raises:
        PwmprError: the model uses an op the walks cannot follow (the message names the module, the op and why).
    """
    shape = tuple(int(s) for s in input_shape)
    first: PwmprError | None = None
    signal = False
    # The input's units: its channels (dim 1), else its features (last dim); where a convolution slides over those,
    # one unit for all of it (a signal, as a one-channel image is; docs/method.md, "Reading the forward").
    for dim in (*dict.fromkeys((1, len(shape))), 0):
        if dim == 0 and not signal:
            break
        try:
            with training_mode(model, False), torch.no_grad():
                return UnitTracer(model).trace(model, shape, dim)
        except LayoutError as exc:
            signal = signal or isinstance(exc, SignalLayout)
            # read as a signal, the model got past the convolution: what stops it now is the error to show
            first = exc if dim == 0 else first or exc
    raise first


class UnitTracer(ActivationRules, ContractionRules, AttentionRules, WatchMode):
    """Builds groups and links while the model's forward runs: each op goes to the rule of its kind."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.params = dict(model.named_parameters())
        self.builder = GroupBuilder()
        self.sites: list[AttentionSite | None] = []
        self.on_constants: dict[str, None] = {}  # weights applied to a constant input (in order of use)

    def trace(self, model: nn.Module, shape: tuple[int, ...], input_dim: int = 1) -> UnitGraph:
        """Run ``model`` on zeros of ``shape`` (its units along ``input_dim``; 0: one unit for all of it) and return
        the unit graph it read."""
        x = torch.zeros((1, *shape), device=device_of(model), dtype=input_dtype_of(model))
        if input_dim == 0:
            g = self.builder.new_group(1, "input", "input")
            self.put(x, Units(torch.zeros(x.shape, dtype=torch.long)))
        else:
            g = self.builder.new_group(shape[input_dim - 1], "input", "input")
            self.put(x, Units(along(torch.arange(shape[input_dim - 1]), input_dim, x.shape)))
        with self.watching(model):
            out = run_forward(model, x)
        out = class_scores(out)  # what the model returns may hold more: the scores, or an error that says why not
        value = self.get(out)
        if not isinstance(value, Units):
            raise PwmprError("PHEW walks need a model that returns one tensor of class scores computed from its input")
        col = unit_vector(value.ids, -1, lambda: PwmprError(
            "PHEW walks need the class scores on the last dimension of the output"))
        if not bool((col >= 0).any()):
            raise PwmprError("PHEW walks found no input-to-output path in the model")
        output, local = self.builder.as_group(col, "output")
        if not torch.equal(local, torch.arange(self.builder.groups[output].n)):
            output, _ = self.builder.gather(col, "output")
        assert g == 0
        self.builder.drop_dead_ends(output)
        return UnitGraph(self.builder.groups, self.builder.links, output, bases=list(self.builder.bases),
                         attention=[site for site in self.sites if site is not None],
                         on_constants=list(self.on_constants))

    def handle(self, op: Op, func, args: tuple, kwargs: dict) -> Any:
        """Run ``func`` and set the shadow of its result by the rule of ``op``'s kind."""
        values = self.tracked(args, kwargs)
        if op.name in CASTS and args:  # x.to(y), x.type_as(y): y gives a dtype, not units
            values = [(t, v) for t, v in values if t is args[0]]
            if not values:
                return func(*args, **kwargs)
        views = [v for _, v in values if isinstance(v, WeightView)]
        data = [t for t, v in values if v is DATA]
        acts = [(t, v) for t, v in values if not isinstance(v, (WeightView, Data))]
        out = func(*args, **kwargs)
        if data:
            if acts and (op.kind is Kind.MOVE or op.kind is Kind.SETITEM):
                raise self.refuse(op, "it indexes with positions computed from the input (a data-dependent "
                                      "selection has no stand-in)")
            if not acts and not views:  # arithmetic on masks and indices: still data
                self._set(out, DATA if op.kind is not Kind.CONST else None)
                return out
        if op.kind is Kind.CONST:
            if acts and not views and op.name not in SHAPE_ONLY:
                self._set(out, DATA)  # comparisons, argmax: computed from the input, no units
            return out
        if op.kind is Kind.CONTRACT:
            self._contract(op, args, kwargs, out)
            return out
        if not acts:
            if not self.weight_result(op, func, args, kwargs, out, views) and op.kind not in (Kind.CONST, Kind.REDUCE):
                raise self.refuse(op, "pwmpr cannot follow this op on a prunable weight")
            return out
        if views:
            raise self.refuse(op, "it combines an activation with a prunable weight elementwise")
        if op.kind is None:
            raise self.refuse(op, "pwmpr has no rule for this op (see docs/method.md, Operations)")
        handler = getattr(self, f"_{op.kind.value}")
        handler(op, func, args, kwargs, out, acts)
        if op.inplace and isinstance(out, Tensor) and out._base is not None:
            self._write_back(out)
        return out

    def _write_back(self, view: Tensor) -> None:
        """After an in-place op on a view of an activation (``h[:, :4].add_(b(h))``), the tensor it views holds the
        view's new units at the view's entries."""
        value, base = self.get(view), view._base
        if not isinstance(value, Units) or tuple(value.ids.shape) != tuple(view.shape):
            return
        ids = self._ids(base)
        ids = (ids.clone(memory_format=torch.contiguous_format) if ids is not None
               else torch.full(base.shape, -1, dtype=torch.long))
        # each entry of the view as a flat index into the base, through the base's own strides
        where = torch.empty_strided(base.shape, base.stride(), dtype=torch.long)
        where.copy_(torch.arange(base.numel()).view(base.shape))
        where = where.as_strided(view.shape, view.stride(), view.storage_offset() - base.storage_offset())
        ids.view(-1)[where.reshape(-1)] = value.ids.reshape(-1).to(ids.device)
        self.put(base, Units(ids))

    def _ids(self, t: object) -> Tensor | None:
        v = self.get(t)
        return v.ids if isinstance(v, Units) else None

    def _marker(self, acts: list[tuple[Tensor, Any]]) -> Any:
        markers = [v for _, v in acts if isinstance(v, MARKERS)]
        return markers[0] if markers else None

    def _set(self, out: Any, value: Any) -> None:
        for o in tensors_in(out):
            self.put(o, value)

    def _activation(self, op: Op, acts: list[tuple[Tensor, Any]]) -> Tensor:
        units = [v for _, v in acts if isinstance(v, Units)]
        if len(units) != 1 or len(acts) != 1:
            raise self.refuse(op, "pwmpr knows this op on one activation")
        return units[0].ids
