"""The mode a scoring copy's forward runs under: each op computed from the input goes to its linear stand-in."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from pwmpr.errors import PwmprError
from pwmpr.graph.mode import WatchMode, WeightView, tensors_in
from pwmpr.graph.ops import CASTS, SHAPE_ONLY, Kind, Op
from pwmpr.surrogate.standin_activations import ActivationStandIns
from pwmpr.surrogate.standin_attention import AttentionStandIns
from pwmpr.surrogate.standin_contract import ContractionStandIns
from pwmpr.surrogate.values import DATA, TANGENT_ATTENTION, TANGENT_LOGITS, WeightHook


class Linearizer(ActivationStandIns, ContractionStandIns, AttentionStandIns, WatchMode):
    """Runs a scoring copy's forward with every op on an activation replaced by its linear stand-in."""

    def __init__(self, model: nn.Module, on_weight_output: WeightHook | None = None, records: list | None = None
                 ) -> None:
        super().__init__(model)
        self.on_weight_output = on_weight_output
        self.records = records
        self.sites = 0  # attention sites seen, numbered as pwmpr.graph numbers them
        self._site: dict[int, int] = {}  # id(tensor) -> site, for tangent logits and attention

    def handle(self, op: Op, func, args: tuple, kwargs: dict) -> Any:
        """The stand-in of ``op`` on these arguments, by the rule of its kind."""
        values = self.tracked(args, kwargs)
        if op.name in CASTS and args:  # x.to(y), x.type_as(y): y gives a dtype, not units
            values = [(t, v) for t, v in values if t is args[0]]
            if not values:
                return func(*args, **kwargs)
        if any(v in (TANGENT_LOGITS, TANGENT_ATTENTION) for _, v in values):
            return self._tangent(op, func, args, kwargs, values)
        views = [v for _, v in values if isinstance(v, WeightView)]
        data = [t for t, v in values if v == DATA]
        acts = [(t, v) for t, v in values if not isinstance(v, WeightView) and v != DATA]
        if data:
            if acts and op.kind in (Kind.MOVE, Kind.SETITEM):
                raise self.refuse(op, "it indexes with positions computed from the input (a data-dependent "
                                      "selection has no stand-in)")
            if not acts and not views:  # arithmetic on masks and indices: still data
                out = func(*args, **kwargs)
                return self._mark(out, DATA) if op.kind is not Kind.CONST else out
        if op.kind is Kind.CONST:
            out = func(*args, **kwargs)
            return self._mark(out, DATA) if acts and not views and op.name not in SHAPE_ONLY else out
        if op.kind is Kind.CONTRACT:
            return self._contract(op, func, args, kwargs)
        if not acts:
            return self._weight_op(op, func, args, kwargs, views)
        if views:
            raise self.refuse(op, "it combines an activation with a prunable weight elementwise")
        if op.kind is None:
            raise self.refuse(op, "pwmpr has no linear stand-in for this op (see docs/method.md, Operations)")
        return getattr(self, f"_{op.kind.value}")(op, func, args, kwargs, acts)

    def _weight_op(self, op: Op, func, args: tuple, kwargs: dict, views: list[WeightView]) -> Any:
        """Transforms of a prunable weight (a cast, a standardization, a view): the weight enters as ``|W| * mask``."""
        if op.kind is Kind.MOVE:
            out = func(*args, **kwargs)
        elif op.kind is Kind.SAME or op.kind is Kind.BINARY and op.name in ("add", "sub", "rsub"):
            out = args[0] if isinstance(args[0], Tensor) and self.get(args[0]) is not None else args[1]
        elif op.kind is Kind.BINARY and op.name in ("mul", "multiply", "div", "divide", "true_divide"):
            out = func(*args, **kwargs)  # a scale stays a factor of every path through the weight
        elif op.kind in (Kind.REDUCE, Kind.CONST):
            return func(*args, **kwargs)  # statistics of a weight are constants
        else:
            raise self.refuse(op, "pwmpr has no linear stand-in for this op on a prunable weight")
        if out is not args[0] or op.kind is Kind.MOVE:
            self.weight_result(op, func, args, kwargs, out, views)
        return out

    def _mark(self, out: Any, what: str) -> Any:
        for t in tensors_in(out):
            self.put(t, what)
        return out

    def _kind(self, acts: list[tuple[Tensor, Any]]) -> str:
        kinds = {v for _, v in acts}
        if len(kinds) > 1:
            raise PwmprError(f"{self.where()} combines attention scores with activations, which PWMP scoring cannot "
                             "linearize")
        return kinds.pop()
