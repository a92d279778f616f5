"""The unit tracer's rules for ops on activations that use no weight (docs/method.md, "Operations").

Mixed into :class:`pwmpr.graph.trace.UnitTracer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._pytree import tree_map

from pwmpr.graph.mode import move_args, tensors_in
from pwmpr.graph.ops import Op, reduced_dims
from pwmpr.graph.shadow import (
    DATA,
    MARKERS,
    MAX_UNIT_VECTORS,
    LayoutError,
    Statistic,
    Units,
    along,
    constant_along,
    cpu_index,
    distinct_slices,
    unit_vector,
)


class ActivationRules:
    """Rules for the ops of :mod:`pwmpr.graph.ops` kinds move, same, spatial, reduce, binary, pad, where,
    masked_fill, setitem, copy, fill, const and composite."""

    def _move(self, op, func, args, kwargs, out, acts) -> None:
        marker = self._marker(acts)
        if marker is not None:
            if len(acts) > 1:
                raise self.refuse(op, "it joins attention scores with other tensors")
            self._set(out, marker)
            return
        if op.name == "fold" and _overlaps(func, args, kwargs):
            raise self.refuse(op, "its blocks overlap, so it sums entries instead of moving them")
        sargs, skwargs = move_args(op, args, kwargs, self._ids, lambda t: torch.full(t.shape, -1, dtype=torch.long))
        try:
            shadow = func(*sargs, **skwargs)
        except NotImplementedError:  # no integer kernel (F.unfold's im2col): the same movement on exact floats
            shadow = _moved_as_float(func, sargs, skwargs)
        except RuntimeError:
            if op.name != "view":
                raise
            shadow = torch.Tensor.reshape(*sargs, **skwargs)  # the shadow's strides differ from the tensor's
        outs = tensors_in(out)
        shadows = tensors_in(shadow)
        for o, s in zip(outs, shadows, strict=False):
            self.put(o, Units(s.to(torch.long)))

    def _same(self, op, func, args, kwargs, out, acts) -> None:
        marker = self._marker(acts)
        if marker is not None:
            self._set(out, marker)
            return
        if len(acts) > 1:
            raise self.refuse(op, "pwmpr knows this op on one activation, and it got two")
        value = acts[0][1]
        for o in tensors_in(out):
            if tuple(o.shape) != tuple(value.ids.shape):
                raise self.refuse(op, "it changes the shape of the activation")
            self.put(o, value)

    def _spatial(self, op, func, args, kwargs, out, acts) -> None:
        ids = self._activation(op, acts)
        unit = unit_vector(ids, 1, lambda: LayoutError(str(self.refuse(op, "it needs the channels on dim 1 "
                                                                                 "(channels first)"))))
        o = tensors_in(out)[0]
        self.put(o, Units(along(unit, 1, o.shape)))

    def _reduce(self, op, func, args, kwargs, out, acts) -> None:
        x = args[0]
        if len(args) > 1 and isinstance(args[1], Tensor):  # torch.max(a, b): elementwise
            self._binary(op, func, args, kwargs, out, acts)
            return
        marker = self._marker(acts)
        if marker is not None:
            self._set(out, marker)
            return
        ids = self._activation(op, acts)
        dims = reduced_dims(op, args, kwargs, x.dim())
        o = tensors_in(out)[0]
        varying = [d for d in range(ids.dim()) if not constant_along(ids, d)]
        if set(varying) & set(dims):
            self._pool_units(op, ids, varying, dims, o)
            return
        reduced = ids.amax(dim=dims, keepdim=True) if dims else ids
        self.put(o, Units(reduced.reshape(o.shape)))

    def _pool_units(self, op: Op, ids: Tensor, varying: list[int], dims: list[int], out: Tensor) -> None:
        """A reduction over the units: a fixed link from every unit it reads to one new unit (a channel mean, a
        max over channels as its mean). Where the units also vary along a dim it keeps (the mean of stacked heads,
        the sum of split-attention branches), the slices it reduces meet entry by entry, as in a residual add.
        Units spread over several reduced dims alone keep nothing: the result is data."""
        if any(d not in dims for d in varying):
            self._merge_slices(ids, dims, out)
            return
        if len(varying) != 1:
            self.put(out, DATA)  # usable in control flow and masks only
            return
        col = unit_vector(ids, varying[0], lambda: None)
        weight = torch.full((1, col.numel(), 1), 1.0 if op.name in ("sum", "nansum") else 1.0 / col.numel())
        made = self.builder.link(None, None, weight, col, 1, self.where())
        if made is None:
            self.put(out, DATA)
            return
        self.put(out, Units(torch.full(tuple(out.shape), made[1], dtype=torch.long)))

    def _merge_slices(self, ids: Tensor, dims: list[int], out: Tensor) -> None:
        """Ids of a reduction over ``dims`` whose slices carry other units: each distinct slice is a merge operand
        (at most ``MAX_UNIT_VECTORS``; more keep nothing: data)."""
        kept = [d for d in range(ids.dim()) if d not in dims]
        distinct = distinct_slices(ids.permute(dims + kept).reshape(-1, *[ids.shape[d] for d in kept]))
        if not distinct or len(distinct) > MAX_UNIT_VECTORS:
            self.put(out, DATA)
            return
        merged = self.builder.merge(distinct, "reduce") if len(distinct) > 1 else distinct[0]
        self.put(out, Statistic(merged.reshape(out.shape).clone(), ids))

    def _binary(self, op, func, args, kwargs, out, acts) -> None:
        marker = self._marker(acts)
        if marker is not None:
            if len(acts) > 1:
                raise self.refuse(op, "it combines attention scores with another activation")
            self._set(out, marker)
            return
        shape = tuple(out.shape)
        values = [v for _, v in acts]
        # a statistic combined with the activation it was computed from normalizes it: that one keeps its units
        values = [v for v in values if not (isinstance(v, Statistic) and any(
            u is not v and tuple(u.ids.shape) == tuple(v.source.shape) and torch.equal(u.ids, v.source)
            for u in values))]
        ids = []
        for v in values:
            try:
                ids.append(v.ids.expand(shape))
            except RuntimeError:
                raise self.refuse(op, "its operands do not broadcast to its result") from None
        if len(ids) == 1 and isinstance(values[0], Statistic) and tuple(values[0].ids.shape) == shape:
            self.put(out, Statistic(ids[0].clone(), values[0].source))  # (a shift or a scale of one: still it)
            return
        self.put(out, Units(self.builder.merge(ids, op.name) if len(ids) > 1 else ids[0].clone()))

    def _pad(self, op, func, args, kwargs, out, acts) -> None:
        ids = self._activation(op, acts)
        pad = args[1] if len(args) > 1 else kwargs["pad"]
        mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
        if op.name == "constant_pad_nd" or mode == "constant":
            shadow = F.pad(ids, pad, value=-1)
        else:
            shadow = F.pad(ids.double().unsqueeze(0) if ids.dim() < 3 else ids.double(), pad, mode=mode).long()
            shadow = shadow.reshape(out.shape)
        self.put(out, Units(shadow))

    def _where(self, op, func, args, kwargs, out, acts) -> None:
        cond = self.get(args[0])
        if isinstance(cond, (Units, *MARKERS)):
            raise self.refuse(op, "its condition is an activation")
        sa, sb = (self._ids(a) for a in args[1:3])
        if cond is DATA and sa is not None and sb is not None:  # a selection that follows the input: both meet
            self.put(out, Units(self.builder.merge([sa.expand(out.shape), sb.expand(out.shape)], "where")))
            return
        if cond is DATA:
            self.put(out, Units((sa if sa is not None else sb).expand(out.shape).clone()))
            return
        sa, sb = (s if s is not None else torch.tensor(-1) for s in (sa, sb))
        self.put(out, Units(torch.where(args[0].cpu(), sa, sb).expand(out.shape).clone()))

    def _masked_fill(self, op, func, args, kwargs, out, acts) -> None:
        mask = args[1] if len(args) > 1 else kwargs["mask"]
        if isinstance(self.get(mask), (Units, *MARKERS)):
            raise self.refuse(op, "its mask is an activation")
        if self.get(mask) is DATA:  # x.masked_fill(x < 0, 0): a hand-written activation keeps the units
            self.put(out, self.get(args[0]))
            return
        marker = self._marker(acts)
        if marker is not None:
            self.put(out, marker)
            return
        self.put(out, Units(self._ids(args[0]).masked_fill(mask.cpu(), -1)))

    def _setitem(self, op, func, args, kwargs, out, acts) -> None:
        target, index, value = args[0], args[1], args[2]
        if any(self.get(t) is not None for t in tensors_in(index)):
            raise self.refuse(op, "it indexes with a tensor computed from the input")
        base = self._ids(target)
        base = base.clone() if base is not None else torch.full(target.shape, -1, dtype=torch.long)
        index = cpu_index(index)
        src = self._ids(value)
        base[index] = src if src is not None else torch.tensor(-1)
        self.put(target, Units(base))

    def _copy(self, op, func, args, kwargs, out, acts) -> None:
        src = self._ids(args[1])
        if src is None:
            self.put(args[0], None)
            return
        self.put(args[0], Units(src.expand(args[0].shape).clone()))

    def _fill(self, op, func, args, kwargs, out, acts) -> None:
        self.put(out, None)

    def _const(self, op, func, args, kwargs, out, acts) -> None:
        self._set(out, DATA)

    def _composite(self, op, func, args, kwargs, out, acts) -> None:
        raise self.refuse(op, "pwmpr has no decomposition for it")

    def _embed(self, op, func, args, kwargs, out, acts) -> None:
        """A lookup of input ids in a dense table ``E`` (vocabulary, features): a fixed link from every unit the ids
        carry to each feature, weighted by the feature's mean ``|E|`` over the vocabulary (docs/method.md,
        Language models)."""
        ids = self._activation(op, acts)
        table = args[1] if len(args) > 1 else kwargs["weight"]
        units = torch.unique(ids[ids >= 0])
        o = tensors_in(out)[0]
        if units.numel() == 0:
            self.put(o, DATA)
            return
        mean = table.detach().abs().float().mean(0).cpu()  # (features,)
        weight = mean[:, None, None].expand(-1, units.numel(), 1)
        made = self.builder.link(None, None, weight, units, 1, self.where())
        self.put(o, Units(along(made[1] + torch.arange(mean.numel()), -1, o.shape)))


def _overlaps(func, args, kwargs) -> bool:
    """Whether ``F.fold`` adds two blocks' entries into one output entry (its stride shorter than a block)."""
    ones = torch.ones(args[0].shape, dtype=torch.float64)
    return bool((func(ones, *args[1:], **kwargs) > 1).any())


def _moved_as_float(func, args, kwargs):
    """``func`` (an op that only moves entries, with zeros where it pads) run on unit ids as float64 shifted by one,
    so that padding comes back as -1 (no unit); float64 holds every id exactly."""

    args, kwargs = tree_map(lambda a: (a + 1).double() if isinstance(a, Tensor) and a.dtype == torch.long else a,
                            (args, kwargs))
    return tree_map(lambda m: m.round().long() - 1 if isinstance(m, Tensor) else m, func(*args, **kwargs))
