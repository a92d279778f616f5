"""The unit tracer's rules for contractions: weight uses become links; ``q @ k^T`` and ``@ v`` attention sites.

Mixed into :class:`pwmpr.graph.trace.UnitTracer`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from pwmpr.graph.mode import WeightView
from pwmpr.graph.ops import Op
from pwmpr.graph.shadow import (
    DATA,
    MARKERS,
    MAX_UNIT_VECTORS,
    LayoutError,
    Logits,
    SignalLayout,
    Units,
    along,
    constant_along,
    constant_along_rows,
    distinct_slices,
    first_appearance,
    unit_vector,
)
from pwmpr.graph.trace_attention import entry_heads


class ContractionRules:
    """Rules for the ops of :mod:`pwmpr.graph.ops` kind contract."""

    def _contract(self, op: Op, args: tuple, kwargs: dict, out: Tensor) -> None:
        if op.name == "linear":
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            self._linear_use(op, x, w, out, unit_dim=-1)
        elif op.name.startswith("conv"):
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
            geometry = {key: args[i] if len(args) > i else kwargs.get(key, default)
                        for i, key, default in ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1))}
            self._linear_use(op, x, w, out, unit_dim=1, groups=int(groups), geometry=geometry)
        elif op.name == "einsum":
            self._einsum(op, args, kwargs, out)
        else:
            a, b = (args[1], args[0]) if op.name == "rmatmul" else (args[0], args[1])
            self._matmul(op, _Operand.of(self, a), _Operand.of(self, b), out)

    def _linear_use(self, op: Op, x: Tensor, w: Tensor, out: Tensor, unit_dim: int, groups: int = 1,
                    geometry: dict[str, Any] | None = None) -> None:
        vx, vw = self.get(x), self.get(w)
        if vx is None:
            if isinstance(vw, WeightView):
                self.on_constants[vw.name] = None  # a weight applied to a constant: no path from the input
            if isinstance(vw, WeightView) or vw is None:
                return
            raise self.refuse(op, "its weight is computed from the input")
        if vx is DATA:
            raise self.refuse(op, "its input is computed from the input but carries no units (a sum over the "
                                  "channels, a mask): PHEW cannot walk through it")
        if not isinstance(vx, Units):
            raise self.refuse(op, "it applies a weight to attention scores")
        if vw is not None and not isinstance(vw, WeightView):
            raise self.refuse(op, "its weight is computed from the input (a dynamic weight has no stand-in)")
        weight = w.detach().abs()
        param, positions = None, None
        if isinstance(vw, WeightView):
            param, positions = vw.name, vw.positions
            weight = self._param_values(vw, tuple(w.shape))
        why = ("its input's units lie along a dim it slides over, which pwmpr follows only for a 1-d convolution of "
               "one group over units computed from the input (ECA's channel attention)"
               if unit_dim == 1 and any(not constant_along(vx.ids, d) for d in range(2, vx.ids.dim()))
               else "its input's units vary along other dims than the one it reads")
        w3 = weight.reshape(weight.shape[0], weight.shape[1], -1)
        pos3 = positions.reshape(w3.shape) if positions is not None else None
        if unit_dim == -1 and not constant_along_rows(vx.ids):
            self._linear_per_row(op, vx.ids, param, positions, weight, out, why)
            return
        if (geometry is not None and w.dim() == 3 and groups == 1 and vx.ids.dim() == 3
                and bool((vx.ids == vx.ids[:, :1]).all()) and not constant_along(vx.ids, 2)):
            self._conv_over_units(op, vx.ids, param, positions, weight, out, geometry, why)
            return
        col = unit_vector(vx.ids, unit_dim, lambda: LayoutError(str(self.refuse(op, why))))
        made = self.builder.link(param, pos3, w3, col, groups, self.where())
        if made is None:
            return
        _, base = made
        self.put(out, Units(along(base + torch.arange(out.shape[unit_dim]), unit_dim, out.shape)))

    def _linear_per_row(self, op: Op, ids: Tensor, param: str | None, positions: Tensor | None, weight: Tensor,
                        out: Tensor, why: str) -> None:
        """A linear layer whose input's units vary along other dims than the features it reads (docs/method.md,
        "Operations").

        Each row read carries one unit (a linear over tokens, as MLP-Mixer mixes them): a link from each unit to a
        new unit of its own, through every entry of the weight that reads a unit, which all units share (a
        depthwise link whose kernel is the weight, stored once). Rows carry a few distinct unit vectors (a class
        token from another branch joined to patch tokens): one link per distinct vector, each to new units of its
        own. The model's input is never read this way: a first layer reads its input's units as features, so a
        model that reads features last is not taken for one that mixes the positions of its input (the tracer then
        tries the other layout).
        """
        rows = ids.reshape(-1, ids.shape[-1])
        if bool(((rows >= 0) & (rows < self.builder.groups[0].n)).any()):
            # the model's input read this way: its units lie along the features this layer reads, not across them
            raise LayoutError(str(self.refuse(op, why)))
        top = rows.amax(1)
        n_out, n_in = weight.shape
        flat_pos = (positions.reshape(-1) if positions is not None else torch.arange(n_out * n_in))
        out_rows = torch.full((rows.shape[0], n_out), -1, dtype=torch.long)
        if bool(((rows == top[:, None]) | (rows < 0)).all()):  # one unit per row: the weight mixes positions
            has = top >= 0
            read = rows[has] >= 0  # the positions each row reads a unit at (padding, a constant token: none)
            if not bool((read == read[:1]).all()):
                raise self.refuse(op, why + " (rows with a unit at different positions)")
            cols = read[0].nonzero().squeeze(1)  # entries that read no unit are no edge
            units = first_appearance(top[has])
            k = units.numel()
            kernel = weight.detach().float().cpu()[:, cols].reshape(1, 1, -1).expand(k, 1, -1)
            entries = flat_pos.cpu().reshape(n_out, n_in)[:, cols].reshape(1, 1, -1).expand(k, 1, -1)
            made = self.builder.link(param, entries, kernel, units, k, self.where())
            if made is None:
                return
            slot = torch.full((int(units.max()) + 1,), -1, dtype=torch.long)
            slot[units] = torch.arange(k)
            out_rows[has] = (made[1] + slot[top[has]])[:, None].expand(-1, n_out)
        else:
            vectors = distinct_slices(rows)
            if len(vectors) > MAX_UNIT_VECTORS:
                raise LayoutError(str(self.refuse(op, why)))
            for vec in vectors:
                made = self.builder.link(param, None if positions is None else positions.reshape(n_out, n_in, 1),
                                         weight.reshape(n_out, n_in, 1), vec, 1, self.where())
                if made is not None:
                    out_rows[(rows == vec).all(1)] = made[1] + torch.arange(n_out)
        self.put(out, Units(out_rows.reshape(out.shape)))

    def _conv_over_units(self, op: Op, ids: Tensor, param: str | None, positions: Tensor | None, weight: Tensor,
                         out: Tensor, geometry: dict[str, Any], why: str) -> None:
        """A 1-d convolution that slides over the units (ECA's channel attention: a kernel of a few taps over the
        pooled channels; docs/method.md, "Operations").

        Each output position is a new unit. Tap ``t`` of output channel ``o`` is a link from the unit each output
        position reads through that tap to a unit of its own, through the entries ``W[o, :, t]``, which every
        position shares (stored once); the taps' units then merge position by position, as a residual add's do,
        so each output unit is fed by the units its window reads. Positions the window reads in the padding feed
        nothing. Every input channel carries the same units (one channel, as ECA's). Refused when one tap reads a
        unit at two output positions (a padding that repeats units: reflect, replicate). Never the model's input: a
        convolution slides over its input's positions, not its units (the tracer then reads the input as one
        signal).
        """
        c_out, c_in, k = weight.shape
        n = ids.shape[-1]
        units = ids[0, 0]  # [n]: the unit at each position (every input channel carries the same)
        if bool(((units >= 0) & (units < self.builder.groups[0].n)).any()):
            raise SignalLayout(str(self.refuse(op, why)))
        place = (torch.arange(n, dtype=torch.float64) + 1.0).view(1, 1, n)
        flat = (positions if positions is not None else torch.arange(weight.numel())).reshape(c_out, c_in, k)
        taps = []
        for t in range(k):
            pick = torch.zeros(1, 1, k, dtype=torch.float64)
            pick[0, 0, t] = 1.0
            read = torch.nn.functional.conv1d(place, pick, None, **geometry)[0, 0].round().long() - 1  # [n_out]
            unit = torch.where(read >= 0, units[read.clamp(min=0)], torch.full_like(read, -1))
            has = unit >= 0
            ids_t = torch.full((c_out, read.numel()), -1, dtype=torch.long)
            if not bool(has.any()):
                taps.append(ids_t)
                continue
            col = unit[has]
            if first_appearance(col).numel() != col.numel():
                raise self.refuse(op, "it slides over the units, and one tap reads a unit at two positions (a "
                                      "padding that repeats units, as reflect or replicate padding does)")
            m = col.numel()
            for o in range(c_out):
                kernel = weight[o, :, t].reshape(1, 1, c_in).expand(m, 1, c_in)
                entries = flat[o, :, t].reshape(1, 1, c_in).expand(m, 1, c_in)
                made = self.builder.link(param, entries, kernel, col, m, self.where())
                if made is not None:
                    ids_t[o, has] = made[1] + torch.arange(m)
            taps.append(ids_t)
        merged = self.builder.merge(taps, op.name) if k > 1 else taps[0]
        self.put(out, Units(merged.reshape(out.shape)))

    def _param_values(self, view: WeightView, shape: tuple[int, ...]) -> Tensor:
        """``|W0|`` of a weight view: the parameter's own entries, whatever transform the forward applied."""
        p = self.params[view.name].detach()
        if view.positions is None:
            return p.abs().reshape(shape)
        return p.abs().reshape(-1)[view.positions.reshape(-1).to(p.device)].reshape(shape)

    def _matmul(self, op: Op, a: _Operand, b: _Operand, out: Tensor, reshape_out=None) -> None:
        shape = tuple(out.shape) if reshape_out is None else reshape_out[0]
        if a.kind == "units" and b.kind in ("weight", "const"):
            if b.tensor.dim() != 2 and not all(s == 1 for s in b.tensor.shape[:-2]):
                raise self.refuse(op, "it multiplies an activation by a batched constant")
            wt = b.matrix().T
            pos = b.positions_matrix()
            made = self.builder.link(b.param, None if pos is None else pos.T.contiguous()[:, :, None],
                              wt[:, :, None], unit_vector(a.ids, -1, lambda: LayoutError(str(self.refuse(
                                  op, "its input's units vary along other dims than the one it reads")))), 1,
                              self.where())
            if made is not None:
                ids = along(made[1] + torch.arange(shape[-1]), -1, shape)
                self._put_out(out, ids, reshape_out)
            return
        if a.kind in ("weight", "const") and b.kind == "units":
            if a.tensor.dim() != 2 and not all(s == 1 for s in a.tensor.shape[:-2]):
                raise self.refuse(op, "it multiplies a batched constant by an activation")
            pos = a.positions_matrix()
            made = self.builder.link(a.param, None if pos is None else pos[:, :, None], a.matrix()[:, :, None],
                              unit_vector(b.ids, -2, lambda: LayoutError(str(self.refuse(
                                  op, "its input's units vary along other dims than the one it reads")))), 1,
                              self.where())
            if made is not None:
                ids = along(made[1] + torch.arange(shape[-2]), -2, shape)
                self._put_out(out, ids, reshape_out)
            return
        if a.kind == "units" and b.kind == "units":
            q = self._feature(op, a.ids, -2)
            k = self._feature(op, b.ids, -1).transpose(-1, -2)
            if not bool((q >= 0).any()) or not bool((k >= 0).any()):
                raise self.refuse(op, "it multiplies two activations along a dim without units; only attention "
                                      "logits (q @ k^T) and the attention output (softmax(...) @ v) are supported")
            self.sites.append(None)
            self.put(out, Logits(q, k, len(self.sites) - 1))
            return
        if a.kind == "attention" and b.kind == "units":
            v = self._feature(op, b.ids, -2)
            ids = self._attention_output(op, [a.value.q, a.value.k, v], shape, a.value.site)
            self._put_out(out, ids, reshape_out)
            site = self.sites[a.value.site]
            self.sites[a.value.site] = dataclasses.replace(
                site, output=self.get(out).ids, output_heads=entry_heads(self.get(out).ids, site))
            return
        if a.kind == "const" and b.kind == "attention" or a.kind == "attention" and b.kind == "const":
            self.put(out, a.value if a.kind == "attention" else b.value)
            return
        if {a.kind, b.kind} == {"const", "weight"}:  # a weight applied to a constant: no path from the input
            self.on_constants[(a if a.kind == "weight" else b).param] = None
            return
        raise self.refuse(op, f"pwmpr cannot multiply {a.kind} by {b.kind} here")

    def _put_out(self, out: Tensor, ids: Tensor, reshape_out) -> None:
        if reshape_out is not None:
            ids = reshape_out[1](ids)
        self.put(out, Units(ids.reshape(out.shape).clone()))

    def _einsum(self, op: Op, args: tuple, kwargs: dict, out: Tensor) -> None:
        equation = args[0].replace(" ", "")
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        if len(operands) != 2 or "..." in equation or "->" not in equation:
            raise self.refuse(op, "pwmpr follows einsum with two operands and an explicit output, without '...'")
        lhs, res = equation.split("->")
        la, lb = lhs.split(",")
        a, b = _Operand.of(self, operands[0]), _Operand.of(self, operands[1])
        if any(c not in res and (c in la) != (c in lb) for c in la + lb):
            raise self.refuse(op, "it sums an operand over a dim the other lacks")
        batch = [c for c in la if c in lb and c in res]
        contracted = [c for c in la if c in lb and c not in res]
        afree = [c for c in la if c not in lb]
        bfree = [c for c in lb if c not in la]
        sizes = {c: s for labels, t in ((la, operands[0]), (lb, operands[1])) for c, s in zip(labels, t.shape,
                                                                                           strict=True)}

        def prod(cs):
            return math.prod(sizes[c] for c in cs)

        a2 = a.rearranged([la.index(c) for c in batch + afree + contracted], (prod(batch), prod(afree),
                                                                             prod(contracted)))
        b2 = b.rearranged([lb.index(c) for c in batch + contracted + bfree], (prod(batch), prod(contracted),
                                                                             prod(bfree)))
        mm_shape = (prod(batch), prod(afree), prod(bfree))
        order = batch + afree + bfree

        def back(ids: Tensor) -> Tensor:
            ids = ids.reshape([sizes[c] for c in order])
            return ids.permute([order.index(c) for c in res])

        self._matmul(op, a2, b2, out, reshape_out=(mm_shape, back))


class _Operand:
    """One factor of a contraction: an activation (units), a prunable weight view, a constant, or attention scores."""

    def __init__(self, kind: str, tensor: Tensor, value: Any = None, ids: Tensor | None = None,
                 param: str | None = None, positions: Tensor | None = None, values: Tensor | None = None) -> None:
        self.kind, self.tensor, self.value, self.ids = kind, tensor, value, ids
        self.param, self.positions, self.values = param, positions, values

    @classmethod
    def of(cls, tracer: Any, t: Tensor) -> _Operand:
        v = tracer.get(t)
        if isinstance(v, Units):
            return cls("units", t, v, ids=v.ids)
        if isinstance(v, MARKERS):
            if isinstance(v, Logits):
                raise tracer.refuse("matmul", "it multiplies attention logits before their softmax")
            return cls("attention", t, v)
        if isinstance(v, WeightView):
            return cls("weight", t, v, param=v.name, positions=v.pos(),
                       values=tracer._param_values(v, tuple(t.shape)))
        return cls("const", t, values=t.detach().abs().cpu().double())

    def rearranged(self, perm: list[int], shape: tuple[int, ...]) -> _Operand:
        def re(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.permute(perm).reshape(shape)

        return _Operand(self.kind, self.tensor.permute(perm).reshape(shape), self.value, re(self.ids), self.param,
                        re(self.positions), re(self.values))

    def matrix(self) -> Tensor:
        return self.values.reshape(self.values.shape[-2:]).float()

    def positions_matrix(self) -> Tensor | None:
        return None if self.positions is None else self.positions.reshape(self.positions.shape[-2:])

