"""The scoring net's stand-ins for contractions: weight uses on ``|W| * mask`` without bias; ``q @ k^T`` logits.

Mixed into :class:`pwmpr.surrogate.linearizer.Linearizer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pwmpr.graph.mode import WeightView
from pwmpr.graph.ops import Op
from pwmpr.surrogate.values import ACT, ATTENTION, LOGITS, TANGENT_LOGITS, arg, detached


class ContractionStandIns:
    """Stand-ins for the ops of :mod:`pwmpr.graph.ops` kind contract."""

    def _contract(self, op: Op, func, args: tuple, kwargs: dict) -> Any:
        if op.name == "linear" or op.name.startswith("conv"):
            x, w = args[0], arg(args, kwargs, 1, "weight")
            vx, vw = self.get(x), self.get(w)
            if vx is None:
                return func(*detached(args), **detached(kwargs))  # no path from the input: a constant
            if vx != ACT:
                raise self.refuse(op, "it applies a weight to attention scores")
            if vw is not None and not isinstance(vw, WeightView):
                raise self.refuse(op, "its weight is computed from the input (a dynamic weight has no stand-in)")
            weight = w if vw is not None else w.detach().abs()
            if op.name == "linear":
                out = F.linear(x, weight)  # docs/method.md, Score: biases are not path edges
                unit_dim = -1
            else:
                rest = list(args[3:]) if len(args) > 3 else []
                extra = {k: v for k, v in kwargs.items() if k not in ("input", "weight", "bias")}
                out = func(x, weight, None, *rest, **extra)
                unit_dim = 1
            return self._weight_output(vw, self._mark(out, ACT), unit_dim)
        if op.name == "einsum":
            return self._einsum(op, func, args, kwargs)
        a, b = (args[1], args[0]) if op.name == "rmatmul" else (args[0], args[1])
        return self._product(op, [a, b], torch.matmul, matmul=True)

    def _product(self, op: Op, operands: list[Tensor], compute: Callable[..., Tensor], matmul: bool = False
                 ) -> Tensor:
        """A contraction of operands (activations, weights, constants, attention weights): see docs/method.md."""
        kinds = [self.get(t) for t in operands]
        acts = [k for k in kinds if k == ACT]
        if len(acts) >= 2:
            site = self.sites
            self.sites += 1
            if self.records is not None:  # pwmp-attn: the q-k product's tangent at the real batch
                rec = self.records[site]
                out = rec.logits(operands[0], rec.b) + rec.logits(rec.a, operands[1])
                self._site[id(out)] = site
                return self._mark(out, TANGENT_LOGITS)
            # q @ k^T: attention logits. Their value does not matter to the stand-in softmax (uniform over what a
            # mask leaves visible), so they are zeros here, and q and k carry no path mass (docs/method.md, Score).
            with torch.no_grad():
                out = torch.zeros_like(compute(*(t.detach() for t in operands)))
            return self._mark(out, LOGITS)
        if LOGITS in kinds:
            raise self.refuse(op, "it multiplies attention logits before their softmax")
        if not acts:
            if ATTENTION in kinds:
                return compute(*operands)
            return compute(*(t.detach() if isinstance(self.get(t), WeightView) else t for t in operands))
        if ATTENTION in kinds and kinds.index(ATTENTION) > kinds.index(ACT):
            raise self.refuse(op, "it multiplies values by attention weights from the right")
        factors = [t if k is not None else t.detach().abs() for t, k in zip(operands, kinds, strict=True)]
        out = self._mark(compute(*factors), ACT)
        views = [(i, k) for i, k in enumerate(kinds) if isinstance(k, WeightView)]
        if views and matmul:  # act @ W: units on the last dim, W's columns; W @ act: units on dim -2, W's rows
            i, view = views[0]
            out = self._weight_output(view, out, -1 if i == 1 else -2, columns=i == 1)
        return out

    def _einsum(self, op: Op, func, args: tuple, kwargs: dict) -> Tensor:
        equation = args[0]
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        return self._product(op, operands, lambda *ops: torch.einsum(equation, *ops))

    def _weight_output(self, view: Any, out: Tensor, unit_dim: int, columns: bool = False) -> Tensor:
        """Hand the output of a use of a prunable weight to ``on_weight_output`` with the positions of the entries
        feeding each output unit, laid out ``[unit, ...]``."""
        if self.on_weight_output is None or not isinstance(view, WeightView):
            return out
        positions = view.positions
        if columns:
            positions = view.pos().transpose(-1, -2)
        out = self.on_weight_output(view.name, positions, out, unit_dim)
        self.put(out, ACT)
        return out
