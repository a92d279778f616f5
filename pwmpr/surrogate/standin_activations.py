"""The scoring net's stand-ins for ops on activations that use no weight (docs/method.md, "Operations").

Mixed into :class:`pwmpr.surrogate.linearizer.Linearizer`.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pwmpr.graph.ops import MAX_LIKE, Kind, Op, reduced_dims
from pwmpr.surrogate.values import (
    ACT,
    ATTENTION,
    DATA,
    DROPOUTS,
    LOGITS,
    arg,
    detached,
    first_tensor,
    inplace,
    positive,
)


class ActivationStandIns:
    """Stand-ins for the ops of :mod:`pwmpr.graph.ops` kinds move, same, spatial, reduce, binary, pad, where,
    masked_fill, setitem, copy, fill, const and composite."""

    def _move(self, op, func, args, kwargs, acts) -> Any:
        kind = self._kind(acts)
        if op.name in ("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack"):
            tensors = args[0] if args else kwargs["tensors"]
            # a constant joined to activations is an additive shift: zero (a class token, say)
            joined = [t if self.get(t) is not None else torch.zeros_like(t) for t in tensors]
            args = (joined, *args[1:]) if args else args
            if not args:
                kwargs = {**kwargs, "tensors": joined}
        return self._mark(func(*args, **kwargs), kind)

    def _same(self, op, func, args, kwargs, acts) -> Any:
        kind = self._kind(acts)
        x = args[0]
        if kind != ACT or self.get(x) is None:
            return self._mark(func(*args, **kwargs) if op.name not in DROPOUTS else x, kind)
        if op.name in ("batch_norm", "instance_norm"):
            weight = arg(args, kwargs, 3, "weight")
            running_var = arg(args, kwargs, 2, "running_var")
            eps = arg(args, kwargs, 7, "eps", 1e-5)
            scale = positive(weight, x.shape[1], x)
            if op.name == "batch_norm" and running_var is not None:
                scale = scale / torch.sqrt(running_var.to(x.dtype) + eps)
            out = x * scale.view(1, -1, *([1] * (x.dim() - 2)))
        elif op.name == "group_norm":
            out = x * positive(arg(args, kwargs, 2, "weight"), x.shape[1], x).view(1, -1, *([1] * (x.dim() - 2)))
        elif op.name in ("layer_norm", "rms_norm"):
            weight = arg(args, kwargs, 2, "weight")
            out = x * weight.abs() if weight is not None else x.clone()
        elif inplace(op, args, kwargs):
            out = x  # an activation's stand-in is the identity: in place, nothing to do
        else:
            out = x.clone()  # a new tensor, as the op returns one: later in-place ops must not reach x
        return self._mark(out, ACT)

    def _spatial(self, op, func, args, kwargs, acts) -> Any:
        x = args[0]
        if op.name not in MAX_LIKE:
            return self._mark(func(*args, **kwargs), ACT)
        nd = int(re.search(r"pool(\d)d", op.name).group(1))
        if op.name.startswith("adaptive"):
            out = getattr(F, f"adaptive_avg_pool{nd}d")(x, arg(args, kwargs, 1, "output_size"))
        elif op.name.startswith("fractional"):
            with torch.no_grad():
                size = first_tensor(func(*(a.detach() if isinstance(a, Tensor) else a for a in args),
                                          **kwargs)).shape[2:]
            out = getattr(F, f"adaptive_avg_pool{nd}d")(x, tuple(size))
        elif op.name.startswith("lp_pool"):
            out = getattr(F, f"avg_pool{nd}d")(x, arg(args, kwargs, 2, "kernel_size"),
                                               arg(args, kwargs, 3, "stride"), 0, arg(args, kwargs, 4,
                                                                                      "ceil_mode", False))
        else:
            dilation = arg(args, kwargs, 4, "dilation", 1)
            if any(d != 1 for d in (dilation if isinstance(dilation, (tuple, list)) else [dilation])):
                raise self.refuse(op, "max pooling with dilation has no average-pooling stand-in")
            out = getattr(F, f"avg_pool{nd}d")(x, arg(args, kwargs, 1, "kernel_size"), arg(args, kwargs, 2,
                                                                                             "stride"),
                                               arg(args, kwargs, 3, "padding", 0),
                                               ceil_mode=arg(args, kwargs, 5, "ceil_mode", False),
                                               count_include_pad=False)
        if "with_indices" in op.name or arg(args, kwargs, 6 if "max_pool" in op.name else 2, "return_indices",
                                            False) is True:
            return self._mark(out, ACT), torch.zeros(out.shape, dtype=torch.long, device=out.device)
        return self._mark(out, ACT)

    def _reduce(self, op, func, args, kwargs, acts) -> Any:
        kind = self._kind(acts)
        if len(args) > 1 and isinstance(args[1], Tensor):  # torch.max(a, b): elementwise
            return self._binary(Op("maximum", Kind.BINARY), func, args, kwargs, acts)
        if kind != ACT or op.name in ("mean", "sum", "nansum"):
            return self._mark(func(*args, **kwargs), kind)
        x = args[0]
        with torch.no_grad():
            real = func(*detached(args), **detached(kwargs))
        ref = first_tensor(real)
        dims = reduced_dims(op, args, kwargs, x.dim())
        out = x.mean(dim=dims, keepdim=ref.dim() == x.dim()).reshape(ref.shape)  # max-like reductions: the mean
        out = self._mark(out, ACT)
        if isinstance(real, tuple):  # (values, indices): the indices of the real reduction, the mean as values
            return type(real)((out, *real[1:]))
        return out

    def _binary(self, op, func, args, kwargs, acts) -> Any:
        a = args[0]
        b = args[1] if len(args) > 1 else kwargs.get("other")
        kind = self._kind(acts)
        if kind != ACT:  # attention scores scaled, masked or shifted by constants keep their meaning
            if len(acts) > 1:
                raise self.refuse(op, "it combines attention scores with another activation")
            return self._mark(func(*args, **kwargs), kind)
        ta, tb = self.get(a) == ACT, self.get(b) == ACT
        if DATA in (self.get(a), self.get(b)):  # a mask or a comparison: x * (x > 0) is a hand-written activation
            t = a if ta else b
            out = t.expand(torch.broadcast_shapes(a.shape, b.shape)).clone()
        elif ta and tb:
            alpha = abs(kwargs.get("alpha", 1))
            bb = b * alpha if alpha != 1 else b
            # docs/method.md, Operations: a product (or quotient) of two activations is linearized around 1: a + b
            out = (a + bb) / 2 if op.name in ("maximum", "minimum", "fmax", "fmin") else a + bb
        else:
            t, c = (a, b) if ta else (b, a)
            c = abs(c) if isinstance(c, (int, float)) else c
            if op.name in ("mul", "multiply"):
                out = t * c
            elif op.name in ("div", "divide", "true_divide") and ta:
                out = t / c
            else:  # a shift, a bound, or 1 / t: the activation itself
                out = t.expand(torch.broadcast_shapes(t.shape, c.shape if isinstance(c, Tensor) else ())).clone()
        if op.inplace:
            a.copy_(out)
            return self._mark(a, ACT)
        return self._mark(out, ACT)

    def _pad(self, op, func, args, kwargs, acts) -> Any:
        x = args[0]
        mode = arg(args, kwargs, 2, "mode", "constant")
        if op.name == "constant_pad_nd" or mode == "constant":
            return self._mark(F.pad(x, arg(args, kwargs, 1, "pad")), ACT)  # the padded value: a shift, zero
        return self._mark(func(*args, **kwargs), ACT)

    def _where(self, op, func, args, kwargs, acts) -> Any:
        cond, a, b = args[0], args[1], args[2]
        if self.get(cond) in (ACT, LOGITS, ATTENTION):
            raise self.refuse(op, "its condition is an activation")
        if self.get(cond) == DATA:  # a selection that follows the input: (a + b) / 2, like max
            ta, tb = self.get(a) == ACT, self.get(b) == ACT
            shape = torch.broadcast_shapes(*(t.shape for t in (a, b) if isinstance(t, Tensor)))
            out = (a + b) / 2 if ta and tb else (a if ta else b).expand(shape).clone()
            return self._mark(out, ACT)
        a = a if self.get(a) is not None else torch.zeros_like(torch.as_tensor(a, dtype=torch.float64))
        b = b if self.get(b) is not None else torch.zeros_like(torch.as_tensor(b, dtype=torch.float64))
        return self._mark(torch.where(cond, a, b), ACT)

    def _masked_fill(self, op, func, args, kwargs, acts) -> Any:
        kind = self._kind(acts)
        if kind != ACT:
            return self._mark(func(*args, **kwargs), kind)
        mask = arg(args, kwargs, 1, "mask")
        if self.get(mask) == DATA:  # x.masked_fill(x < 0, 0): a hand-written activation, the identity
            return self._mark(args[0] if op.inplace else args[0].clone(), ACT)
        if op.inplace:
            return self._mark(args[0].masked_fill_(mask, 0.0), ACT)
        return self._mark(args[0].masked_fill(mask, 0.0), ACT)

    def _setitem(self, op, func, args, kwargs, acts) -> Any:
        target, index, value = args
        if self.get(value) is None:
            value = 0.0  # a constant written into an activation: a shift
        elif self.get(target) is None:
            target.zero_()
        target[index] = value
        self.put(target, ACT)

    def _copy(self, op, func, args, kwargs, acts) -> Any:
        out = func(*args, **kwargs)
        return self._mark(out, ACT) if self.get(args[1]) is not None else out

    def _fill(self, op, func, args, kwargs, acts) -> Any:
        out = func(*args, **kwargs)
        self.put(out, None)
        return out

    def _const(self, op, func, args, kwargs, acts) -> Any:
        return func(*args, **kwargs)

    def _composite(self, op, func, args, kwargs, acts) -> Any:
        raise self.refuse(op, "pwmpr has no decomposition for it")

    def _embed(self, op, func, args, kwargs, acts) -> Any:
        """A lookup of input ids in a dense table ``E`` (vocabulary, features): the input's value times each
        feature's mean ``|E|`` over the vocabulary, a token drawn uniformly (docs/method.md, Language models)."""
        x = args[0]
        if self._kind(acts) != ACT or self.get(x) != ACT:
            raise self.refuse(op, "it looks up ids that are not the model's input")
        table = args[1] if len(args) > 1 else kwargs["weight"]
        return self._mark(x.unsqueeze(-1) * table.detach().abs().to(x.dtype).mean(0), ACT)
