"""The scoring net's stand-ins for attention: uniform attention over visible positions, or pwmp-attn's tangent.

See docs/method.md, "Attention: growing q and k". Mixed into :class:`pwmpr.surrogate.linearizer.Linearizer`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pwmpr.graph.mode import tensors_in
from pwmpr.graph.ops import Kind, Op
from pwmpr.surrogate.values import (
    ACT,
    ATTENTION,
    DROPOUTS,
    LOGITS,
    TANGENT_ATTENTION,
    TANGENT_LOGITS,
    arg,
)


class AttentionStandIns:
    """Stand-ins for the ops of :mod:`pwmpr.graph.ops` kinds softmax and attention, and for any op on a tangent."""

    def _softmax(self, op, func, args, kwargs, acts) -> Any:
        x = args[0]
        if self.get(x) == ACT:  # exp -> the identity, the division by a sum a normalization without a scale
            return self._same(op, func, args, kwargs, acts)
        if self.get(x) != LOGITS:
            raise self.refuse(op, "a softmax of attention weights has no stand-in (only of their logits)")
        dim = arg(args, kwargs, 1, "dim", -1)
        visible = torch.isfinite(x.detach()).to(x.dtype)
        weights = visible / visible.sum(dim=dim, keepdim=True).clamp(min=1)
        return self._mark(weights, ATTENTION)

    def _attention(self, op, func, args, kwargs, acts) -> Any:
        q, k, v = (arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
        if self.get(v) != ACT:
            raise self.refuse(op, "its values are not computed from the input")
        site = self.sites
        self.sites += 1
        if self.records is not None:  # pwmp-attn: the tangent of the real attention
            rec = self.records[site]
            ds = rec.scale * (q @ rec.b + rec.a @ k.transpose(-2, -1))
            ds = ds.masked_fill(~rec.visible, 0.0)
            out = rec.attention @ v + softmax_tangent(rec.attention, ds, -1) @ rec.v
            return self._mark(out, ACT)
        mask = arg(args, kwargs, 3, "attn_mask")
        causal = arg(args, kwargs, 5, "is_causal", False)
        visible = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=v.device)
        if causal:
            visible = visible.tril()
        if mask is not None:
            visible = visible & (mask if mask.dtype == torch.bool else torch.isfinite(mask))
        weights = visible.to(v.dtype)
        weights = weights / weights.sum(-1, keepdim=True).clamp(min=1)
        if arg(args, kwargs, 7, "enable_gqa", False) and v.shape[-3] != q.shape[-3]:
            v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
        return self._mark(weights @ v, ACT)

    def _tangent(self, op: Op, func, args: tuple, kwargs: dict, values: list) -> Any:
        """An op on an attention's tangent logits or tangent weights (docs/method.md, "Attention: growing q and k")."""
        kinds = [v for _, v in values]
        tangent = next(t for t, v in values if v in (TANGENT_LOGITS, TANGENT_ATTENTION))
        kind, site = self.get(tangent), self._site[id(tangent)]
        rec = self.records[site]
        if op.kind is Kind.CONTRACT and kind == TANGENT_ATTENTION and ACT in kinds:
            operands = [a for a in (args[1:] if op.name == "einsum" else args) if isinstance(a, Tensor)]
            if op.name == "rmatmul":
                operands = operands[::-1]
            if operands[0] is not tangent:
                raise self.refuse(op, "it multiplies values by attention weights from the right")
            v = operands[1]
            return self._mark(rec.mix(rec.attention, v) + rec.mix(tangent, rec.v), ACT)
        if len(values) > 1:
            raise self.refuse(op, "it combines an attention's tangent with another activation")
        if op.kind is Kind.SOFTMAX and kind == TANGENT_LOGITS:
            out = softmax_tangent(rec.attention, tangent, rec.dim)
            kind = TANGENT_ATTENTION
        elif op.kind is Kind.BINARY and op.name in ("add", "sub", "rsub"):
            out = tangent.clone()  # an additive term (a bias, a mask) has no tangent
        elif op.kind is Kind.MASKED_FILL:
            out = tangent.masked_fill(arg(args, kwargs, 1, "mask"), 0.0)
        elif op.kind is Kind.SAME and op.name in DROPOUTS:
            out = tangent
        elif op.kind in (Kind.MOVE, Kind.SAME, Kind.BINARY, Kind.REDUCE):
            out = func(*args, **kwargs)  # views, casts, a scale; an average of the weights (returned, not a path)
        elif op.kind is Kind.CONST:
            return func(*args, **kwargs)
        else:
            raise self.refuse(op, "pwmpr has no tangent stand-in for this op on attention scores")
        for t in tensors_in(out):
            self._site[id(t)] = site
        return self._mark(out, kind)


def softmax_tangent(attention: Tensor, ds: Tensor, dim: int) -> Tensor:
    """``|J| dS`` for the absolute softmax Jacobian ``|J| = |diag(a) - a a^T|`` at the attention map ``a``:
    ``a (a . dS) + a (1 - 2 a) dS`` along ``dim`` (docs/method.md, "Attention: growing q and k")."""
    return attention * (attention * ds).sum(dim, keepdim=True) + attention * (1 - 2 * attention) * ds

