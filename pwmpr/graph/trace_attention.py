"""The unit tracer's rules for attention: softmax of logits, ``scaled_dot_product_attention``, q/k/v merges.

Mixed into :class:`pwmpr.graph.trace.UnitTracer`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from pwmpr.graph.ops import Op
from pwmpr.graph.shadow import (
    MAX_UNIT_VECTORS,
    AttentionMap,
    Logits,
    Units,
    constant_along,
    distinct_slices,
    first_appearance,
)
from pwmpr.graph.units import AttentionSite


class AttentionRules:
    """Rules for the ops of :mod:`pwmpr.graph.ops` kinds softmax and attention, and the attention output."""

    def _softmax(self, op, func, args, kwargs, out, acts) -> None:
        value = acts[0][1]
        if len(acts) != 1:
            raise self.refuse(op, "pwmpr knows this op on one activation")
        if isinstance(value, Logits):
            self.put(out, AttentionMap(value.q, value.k, value.site))
            return
        if not isinstance(value, Units):
            raise self.refuse(op, "a softmax of attention weights has no stand-in (only of their logits)")
        # Of anything else (class scores, split attention's branch weights, a pooling's token weights): an
        # elementwise exp, then a division by a sum, a normalization: the units are kept, as a norm keeps them.
        self._same(op, func, args, kwargs, out, acts)

    def _attention(self, op, func, args, kwargs, out, acts) -> None:
        q, k, v = (args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(("query", "key", "value")))
        ids = [self._ids(t) for t in (q, k, v)]
        if ids[2] is None:
            raise self.refuse(op, "its values are not computed from the input")
        feats = [None if i is None else self._feature(op, i, -2) for i in ids]
        self.sites.append(None)
        self.put(out, Units(self._attention_output(op, feats, tuple(out.shape), len(self.sites) - 1)))

    def _feature(self, op: Op, ids: Tensor, token_dim: int) -> Tensor:
        """The unit ids of an attention operand with its token dim reduced (kept as size 1). Tokens carrying other
        units (a class token computed by another branch, rotary features past a prefix) meet feature by feature:
        attention mixes the tokens, so each feature's units merge, as a residual add's do."""
        if constant_along(ids, token_dim):
            return ids.amax(dim=token_dim, keepdim=True)
        distinct = distinct_slices(ids.movedim(token_dim, 0))
        if len(distinct) > MAX_UNIT_VECTORS:
            raise self.refuse(op, "the units of an attention operand vary over its tokens")
        merged = self.builder.merge([d.unsqueeze(0) for d in distinct], "attention tokens")
        return merged.movedim(0, token_dim)

    def _attention_output(self, op: Op, feats: list[Tensor | None], shape: tuple[int, ...], site: int) -> Tensor:
        """Ids of ``attention @ v``: q, k and v units meet (like a 3-way residual add) where they line up; the site
        is recorded for the attention-aware growth rules."""
        present = [f for f in feats if f is not None]
        try:
            common = torch.broadcast_shapes(*(f.shape for f in present))
            merged = self.builder.merge([f.expand(common) for f in present], "attention")
        except RuntimeError:  # q/k and v of different widths: only v's units carry on
            merged = feats[-1]
        try:
            out = merged.expand(shape).clone()
        except RuntimeError:
            raise self.refuse(op, "its output does not line up with its values' units") from None
        heads = [_heads(f) if f is not None else torch.zeros(0, dtype=torch.long) for f in feats]
        record = AttentionSite(name=self.where(), q=_distinct(feats[0]), k=_distinct(feats[1]), v=_distinct(feats[2]),
                               q_heads=heads[0], k_heads=heads[1], out_units=_distinct(merged),
                               out_heads=_heads(merged), output=out, output_heads=torch.empty(0, dtype=torch.long))
        self.sites[site] = dataclasses.replace(record, output_heads=entry_heads(out, record))
        return out


def entry_heads(output: Tensor, site: AttentionSite) -> Tensor:
    """The head of each entry of an attention output (-1 where it carries no unit)."""
    if not site.out_units.numel():
        return torch.full_like(output, -1)
    table = torch.full((int(site.out_units.max()) + 1,), -1, dtype=torch.long)
    table[site.out_units] = site.out_heads
    inside = (output >= 0) & (output < table.numel())
    return torch.where(inside, table[output.clamp(min=0, max=table.numel() - 1)], -1)


def _distinct(ids: Tensor | None) -> Tensor:
    """The distinct unit ids of a feature tensor, in order of first appearance (none for a missing operand)."""
    if ids is None:
        return torch.zeros(0, dtype=torch.long)
    return first_appearance(ids[ids >= 0])


def _heads(feat: Tensor) -> Tensor:
    """The head of each q unit (in :func:`_distinct` order): its position over the dims before the feature dim,
    numbered by first appearance (the units of a head repeat along window or batch dims)."""
    flat = feat.reshape(-1)
    d = feat.shape[-1]
    units = _distinct(feat)
    first = torch.full((int(units.max()) + 1 if units.numel() else 0,), flat.numel(), dtype=torch.long)
    valid = flat >= 0
    first.scatter_reduce_(0, flat[valid], torch.nonzero(valid).squeeze(1), "amin")
    raw = first[units] // d
    _, heads = torch.unique(raw, return_inverse=True)
    return heads

