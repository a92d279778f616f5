"""Reading a model's unit graph from one real forward pass (docs/method.md, Seed and "Operations").

The model runs once, in eval mode, on a probe input of batch 1, under :class:`UnitTracer` (a
:class:`pwmpr.graph.mode.WatchMode`). Every activation computed from the input carries a *shadow*: a tensor of its
shape holding, for each entry, the global id of the unit it belongs to (-1 for an entry that carries none, such as
padding or a class token). Data movement (views, permutes, slices, ``cat``, channel shuffles, window partitions) is
applied to the shadow by running the same op on it, so units are carried through exactly. Each use of a weight
(``linear``, ``conv`` of any groups, a ``matmul`` with a parameter) becomes a link to a new group; an elementwise op
on two activations (a residual add, a gate ``x * se(x)``) and attention (``q @ k^T``, softmax, ``@ v``, or
``scaled_dot_product_attention``) become merges. An op the walks cannot follow raises a PwmprError naming the
module, the op and why.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pwmpr.errors import PwmprError
from pwmpr.graph.mode import WatchMode, WeightView, move_args, tensors_in
from pwmpr.graph.ops import Kind, Op
from pwmpr.graph.units import AttentionSite, Group, Link, UnitGraph
from pwmpr.probe import device_of, float_dtype_of, run_forward, training_mode


@dataclass(frozen=True)
class Units:
    """An activation: ``ids[entry]`` is the global unit id of each entry (-1: none), shaped like the tensor."""

    ids: Tensor


@dataclass(frozen=True)
class Logits:
    """Attention logits ``q @ k^T`` of attention site ``site``: the unit ids of q and k along the contracted dim,
    laid out ``(..., 1, d)``."""

    q: Tensor
    k: Tensor
    site: int


@dataclass(frozen=True)
class AttentionMap:
    """The softmax of attention logits (as in :class:`Logits`)."""

    q: Tensor
    k: Tensor
    site: int


_MARKERS = (Logits, AttentionMap)


class _LayoutError(PwmprError):
    """An op reads units along another dim than the one they lie on: the input's units may lie elsewhere."""


class Data:
    """A value computed from the input that carries no units: a comparison, an argmax, a mask."""


DATA = Data()


def build_unit_graph(model: nn.Module, input_shape: Sequence[int]) -> UnitGraph:
    """Run ``model`` once on a probe input of ``input_shape`` (batch excluded) and read its unit graph.

    The model is not changed: it runs in eval mode under ``no_grad`` and every module's training flag is restored.
    Python control flow follows the branch the probe input (zeros) takes.

    The input's units are its channels (dim 1 of the batched input: images, flat vectors) or, where the model reads
    its input's last dim as features (a sequence of tokens), its features.

    Raises:
        PwmprError: the model uses an op the walks cannot follow (the message names the module, the op and why).
    """
    shape = tuple(int(s) for s in input_shape)
    first: PwmprError | None = None
    for dim in dict.fromkeys((1, len(shape))):
        try:
            with training_mode(model, False), torch.no_grad():
                return UnitTracer(model).trace(model, shape, dim)
        except _LayoutError as exc:
            first = first or exc
    raise first


class UnitTracer(WatchMode):
    """Builds groups and links while the model's forward runs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.params = dict(model.named_parameters())
        self.groups: list[Group] = []
        self.links: list[Link] = []
        self.bases: list[int] = []
        self.total = 0
        self._gathers: dict[bytes, int] = {}
        self.sites: list[AttentionSite | None] = []

    # -- the trace ----------------------------------------------------------------------------------------------
    def trace(self, model: nn.Module, shape: tuple[int, ...], input_dim: int = 1) -> UnitGraph:
        x = torch.zeros((1, *shape), device=device_of(model), dtype=float_dtype_of(model))
        g = self._new_group(shape[input_dim - 1], "input", "input")
        self.put(x, Units(_along(torch.arange(shape[input_dim - 1]), input_dim, x.shape)))
        with self.watching(model):
            out = run_forward(model, x)
        value = self.get(out) if isinstance(out, Tensor) else None
        if not isinstance(value, Units):
            raise PwmprError("PHEW walks need a model that returns one tensor of class scores computed from its input")
        col = _unit_vector(value.ids, -1, lambda: PwmprError(
            "PHEW walks need the class scores on the last dimension of the output"))
        if not bool((col >= 0).any()):
            raise PwmprError("PHEW walks found no input-to-output path in the model")
        output, local = self._as_group(col, "output")
        if not torch.equal(local, torch.arange(self.groups[output].n)):
            output, _ = self._gather(col, "output")
        assert g == 0
        self._drop_dead_ends(output)
        return UnitGraph(self.groups, self.links, output, bases=list(self.bases),
                         attention=[site for site in self.sites if site is not None])

    # -- groups -------------------------------------------------------------------------------------------------
    def _new_group(self, n: int, kind: str, name: str, **fields: Any) -> int:
        self.groups.append(Group(n=n, kind=kind, name=name, **fields))
        self.bases.append(self.total)
        self.total += n
        return len(self.groups) - 1

    def _owner(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Group and local unit of global ids (all valid)."""
        bases = torch.tensor(self.bases, dtype=torch.long)
        g = torch.searchsorted(bases, ids, right=True) - 1
        return g, ids - bases[g]

    def _as_group(self, col: Tensor, name: str) -> tuple[int, Tensor]:
        """The group a vector of global ids (one per input feature of a link) reads from, and the local unit of each
        feature (-1: none); ids from several groups are gathered into a merge group first."""
        valid = col >= 0
        groups, local = self._owner(col[valid])
        if bool((groups == groups[0]).all()):
            out = torch.full_like(col, -1)
            out[valid] = local
            return int(groups[0]), out
        return self._gather(col, name)

    def _gather(self, col: Tensor, name: str) -> tuple[int, Tensor]:
        """A merge group whose units are the distinct ids of ``col`` (in order of first appearance)."""
        valid = col >= 0
        ids = col[valid]
        key = ids.numpy().tobytes()
        if key not in self._gathers:
            uniq = _first_appearance(ids)
            g, local = self._owner(uniq)
            m = self._new_group(uniq.numel(), "merge", f"gather:{name}", src_group=g[:, None].clone(),
                                src_unit=local[:, None].clone(), operands=list(dict.fromkeys(g.tolist())))
            for op in self.groups[m].operands:
                self.groups[op].consumers.append(("merge", m))
            self._gathers[key] = m
        m = self._gathers[key]
        child = self._child_lookup(m)
        out = torch.full_like(col, -1)
        out[valid] = child[ids]
        return m, out

    def _child_lookup(self, m: int) -> Tensor:
        """Global id -> unit of gather group ``m`` (-1 elsewhere)."""
        group = self.groups[m]
        table = torch.full((self.total,), -1, dtype=torch.long)
        table[torch.tensor(self.bases)[group.src_group[:, 0]] + group.src_unit[:, 0]] = torch.arange(group.n)
        return table

    def _merge(self, operands: Sequence[Tensor], name: str) -> Tensor:
        """Ids of an elementwise op on activations with unit ids ``operands`` (broadcast to one shape).

        Each distinct tuple of ids that meet in an entry becomes one unit of a new merge group, fed by those ids: a
        residual add gives ``(x_j, f(x)_j)``, a gate ``(x_c, se(x)_c)``, a gate shared by every channel ``(x_c, a)``
        for each c. An entry where an operand carries no unit (a class token) joins the unit of the one tuple that
        agrees with it on the others. Units are numbered in the order they first appear.
        """
        first = operands[0]
        if all(torch.equal(first, o) for o in operands[1:]):
            return first
        # Dims along which no operand's units vary add no new tuples: reduce them away first.
        small = list(operands)
        for d in range(first.dim()):
            if first.shape[d] > 1 and all(_constant_along(o, d) for o in small):
                small = [o.amax(dim=d, keepdim=True) for o in small]
        stacked = torch.stack([o.reshape(-1) for o in small], 1)  # [entries, arity]
        key = torch.zeros(stacked.shape[0], dtype=torch.long)
        for s in range(stacked.shape[1]):
            key = key * (self.total + 1) + (stacked[:, s] + 1)
        keys, inverse = torch.unique(key, return_inverse=True)
        first_entry = torch.full((keys.numel(),), stacked.shape[0], dtype=torch.long).scatter_reduce_(
            0, inverse, torch.arange(stacked.shape[0]), "amin")
        distinct = stacked[first_entry]
        order = torch.argsort(first_entry)
        if bool((distinct >= 0).all()):
            target = torch.arange(len(distinct))
        else:
            target = torch.tensor(self._dominators([tuple(t) for t in distinct.tolist()]), dtype=torch.long)
        # children: the tuples others point to, in order of first appearance
        is_kid = torch.zeros(len(distinct), dtype=torch.bool)
        is_kid[target[target >= 0]] = True
        is_kid &= target == torch.arange(len(distinct))
        kids = order[is_kid[order]]
        child_of = torch.full((len(distinct),), -1, dtype=torch.long)
        child_of[kids] = torch.arange(kids.numel())
        # sources of each child: its ids, ordered by operand rank (groups by first appearance, slot by slot), then id
        by_first = distinct[order]
        rank_groups = []
        for s in range(by_first.shape[1]):
            col = by_first[:, s][by_first[:, s] >= 0]
            if col.numel():
                rank_groups += self._owner(_first_appearance(col))[0].tolist()
        rank = {g: r for r, g in enumerate(dict.fromkeys(rank_groups))}
        rank_of = torch.full((len(self.groups),), len(rank), dtype=torch.long)
        rank_of[torch.tensor(list(rank))] = torch.arange(len(rank))
        src = distinct[kids]  # [children, arity]
        valid = src >= 0
        g, local = torch.full_like(src, -1), torch.full_like(src, -1)
        g[valid], local[valid] = self._owner(src[valid])
        sort_key = torch.where(valid, rank_of[g.clamp(min=0)] * (self.total + 1) + local,
                               torch.full_like(src, len(rank) * (self.total + 1)))
        perm = torch.argsort(sort_key, dim=1, stable=True)
        src_group, src_unit = g.gather(1, perm), local.gather(1, perm)
        width = int(valid.sum(1).max())
        m = self._new_group(kids.numel(), "merge", name, src_group=src_group[:, :width].contiguous(),
                            src_unit=src_unit[:, :width].contiguous(), operands=list(rank))
        for op in rank:
            self.groups[op].consumers.append(("merge", m))
        child = torch.where(target >= 0, self.bases[m] + child_of[target.clamp(min=0)], -1)
        return child[inverse].view(small[0].shape).expand(first.shape).contiguous()

    @staticmethod
    def _dominators(tuples: list[tuple[int, ...]]) -> list[int]:
        """For each tuple, the tuple whose unit it takes: itself, or the one tuple with more ids that agrees with it
        on every id it has (-1 for a tuple without ids)."""
        index: dict[tuple[int, int], set[int]] = {}
        for i, t in enumerate(tuples):
            for s, u in enumerate(t):
                if u >= 0:
                    index.setdefault((s, u), set()).add(i)
        out = []
        for i, t in enumerate(tuples):
            valid = [(s, u) for s, u in enumerate(t) if u >= 0]
            if not valid:
                out.append(-1)
                continue
            if len(valid) == len(t):
                out.append(i)
                continue
            agree = set.intersection(*(index[p] for p in valid))
            bigger = [j for j in agree if sum(u >= 0 for u in tuples[j]) > len(valid)]
            maximal = [j for j in bigger if all(sum(u >= 0 for u in tuples[k]) <= sum(u >= 0 for u in tuples[j])
                                                 for k in bigger)]
            out.append(maximal[0] if len(maximal) == 1 else i)
        return out

    def _link(self, param: str | None, positions: Tensor | None, weight: Tensor, col: Tensor, groups: int,
              name: str) -> tuple[int, int] | None:
        """A link from the units ``col`` (global ids per input feature, per group of a grouped conv) through
        ``weight`` (``|W0|``, ``[n_out, n_in, n_kernel]``); returns ``(group, base id)`` of its outputs, or None when
        no input
        feature carries a unit."""
        if not bool((col >= 0).any()):
            return None
        src, local = self._as_group(col, name)
        link = Link(param=param, src=src, dst=-1, weight=weight.detach().float().cpu().contiguous(),
                    col_unit=local, n_src=self.groups[src].n, groups=groups, positions=positions)
        if groups > 1 and bool(torch.bincount(local[local >= 0], minlength=1).max() > 1):
            raise PwmprError(f"PHEW cannot follow {self.where()}: a grouped convolution reads one unit twice")
        self.links.append(link)
        dst = self._new_group(weight.shape[0], "layer", name, link=len(self.links) - 1)
        link.dst = dst
        self.groups[src].consumers.append(("link", len(self.links) - 1))
        return dst, self.bases[dst]

    def _drop_dead_ends(self, output: int) -> None:
        """Forget consumers that cannot lead to the output, so walks never get stuck in them."""
        reaches = [False] * len(self.groups)
        reaches[output] = True
        for g in reversed(range(len(self.groups))):
            group = self.groups[g]
            group.consumers = [
                (kind, idx) for kind, idx in group.consumers if reaches[self.links[idx].dst if kind == "link" else idx]
            ]
            reaches[g] = reaches[g] or bool(group.consumers)
        if not reaches[0]:
            raise PwmprError("PHEW walks found no input-to-output path in the model")

    # -- ops ------------------------------------------------------------------------------------------------------
    def handle(self, op: Op, func, args: tuple, kwargs: dict) -> Any:
        values = self.tracked(args, kwargs)
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
            if acts and not views:
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
        return out

    def _ids(self, t: object) -> Tensor | None:
        v = self.get(t)
        return v.ids if isinstance(v, Units) else None

    def _marker(self, acts: list[tuple[Tensor, Any]]) -> Any:
        markers = [v for _, v in acts if isinstance(v, _MARKERS)]
        return markers[0] if markers else None

    def _set(self, out: Any, value: Any) -> None:
        for o in tensors_in(out):
            self.put(o, value)

    def _move(self, op, func, args, kwargs, out, acts) -> None:
        marker = self._marker(acts)
        if marker is not None:
            if len(acts) > 1:
                raise self.refuse(op, "it joins attention scores with other tensors")
            self._set(out, marker)
            return
        sargs, skwargs = move_args(op, args, kwargs, self._ids, lambda t: torch.full(t.shape, -1, dtype=torch.long))
        try:
            shadow = func(*sargs, **skwargs)
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
        unit = _unit_vector(ids, 1, lambda: _LayoutError(str(self.refuse(op, "it needs the channels on dim 1 "
                                                                                 "(channels first)"))))
        o = tensors_in(out)[0]
        self.put(o, Units(_along(unit, 1, o.shape)))

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
        dims = _reduced_dims(op, args, kwargs, x.dim())
        o = tensors_in(out)[0]
        varying = [d for d in range(ids.dim()) if not _constant_along(ids, d)]
        if set(varying) & set(dims):
            self._pool_units(op, ids, varying, dims, o)
            return
        reduced = ids.amax(dim=dims, keepdim=True) if dims else ids
        self.put(o, Units(reduced.reshape(o.shape)))

    def _pool_units(self, op: Op, ids: Tensor, varying: list[int], dims: list[int], out: Tensor) -> None:
        """A reduction over the units: a fixed link from every unit it reads to one new unit (a channel mean, a
        max over channels as its mean). Units spread over several dims keep nothing: the result is data."""
        if len(varying) != 1:
            self.put(out, DATA)  # usable in control flow and masks only
            return
        col = _unit_vector(ids, varying[0], lambda: None)
        weight = torch.full((1, col.numel(), 1), 1.0 if op.name in ("sum", "nansum") else 1.0 / col.numel())
        made = self._link(None, None, weight, col, 1, self.where())
        if made is None:
            self.put(out, DATA)
            return
        self.put(out, Units(torch.full(tuple(out.shape), made[1], dtype=torch.long)))

    def _binary(self, op, func, args, kwargs, out, acts) -> None:
        marker = self._marker(acts)
        if marker is not None:
            if len(acts) > 1:
                raise self.refuse(op, "it combines attention scores with another activation")
            self._set(out, marker)
            return
        shape = tuple(out.shape)
        ids = []
        for _, v in acts:
            try:
                ids.append(v.ids.expand(shape))
            except RuntimeError:
                raise self.refuse(op, "its operands do not broadcast to its result") from None
        self.put(out, Units(self._merge(ids, op.name) if len(ids) > 1 else ids[0].clone()))

    def _softmax(self, op, func, args, kwargs, out, acts) -> None:
        value = acts[0][1]
        if isinstance(value, Logits) and len(acts) == 1:
            self.put(out, AttentionMap(value.q, value.k, value.site))
            return
        raise self.refuse(op, "a softmax of an activation that is not attention logits (q @ k) mixes the units it "
                              "normalizes over; pwmpr has no per-unit stand-in for it")

    def _attention(self, op, func, args, kwargs, out, acts) -> None:
        q, k, v = (args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(("query", "key", "value")))
        ids = [self._ids(t) for t in (q, k, v)]
        if ids[2] is None:
            raise self.refuse(op, "its values are not computed from the input")
        feats = [None if i is None else self._feature(op, i, -2) for i in ids]
        self.sites.append(None)
        self.put(out, Units(self._attention_output(op, feats, tuple(out.shape), len(self.sites) - 1)))

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
        if isinstance(cond, (Units, *_MARKERS)):
            raise self.refuse(op, "its condition is an activation")
        sa, sb = (self._ids(a) for a in args[1:3])
        if cond is DATA and sa is not None and sb is not None:  # a selection that follows the input: both meet
            self.put(out, Units(self._merge([sa.expand(out.shape), sb.expand(out.shape)], "where")))
            return
        if cond is DATA:
            self.put(out, Units((sa if sa is not None else sb).expand(out.shape).clone()))
            return
        sa, sb = (s if s is not None else torch.tensor(-1) for s in (sa, sb))
        self.put(out, Units(torch.where(args[0].cpu(), sa, sb).expand(out.shape).clone()))

    def _masked_fill(self, op, func, args, kwargs, out, acts) -> None:
        mask = args[1] if len(args) > 1 else kwargs["mask"]
        if isinstance(self.get(mask), (Units, *_MARKERS)):
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
        index = _cpu_index(index)
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
        made = self._link(None, None, weight, units, 1, self.where())
        self.put(o, Units(_along(made[1] + torch.arange(mean.numel()), -1, o.shape)))

    # -- contractions ---------------------------------------------------------------------------------------------
    def _contract(self, op: Op, args: tuple, kwargs: dict, out: Tensor) -> None:
        if op.name == "linear":
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            self._linear_use(op, x, w, out, unit_dim=-1)
        elif op.name.startswith("conv"):
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
            self._linear_use(op, x, w, out, unit_dim=1, groups=int(groups))
        elif op.name == "einsum":
            self._einsum(op, args, kwargs, out)
        else:
            a, b = (args[1], args[0]) if op.name == "rmatmul" else (args[0], args[1])
            self._matmul(op, _Operand.of(self, a), _Operand.of(self, b), out)

    def _linear_use(self, op: Op, x: Tensor, w: Tensor, out: Tensor, unit_dim: int, groups: int = 1) -> None:
        vx, vw = self.get(x), self.get(w)
        if vx is None:
            if isinstance(vw, WeightView) or vw is None:
                return  # a weight applied to a constant: no path from the input
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
        why = ("its input's units lie along a dim it slides over (a convolution over the units has no rule)"
               if unit_dim == 1 and any(not _constant_along(vx.ids, d) for d in range(2, vx.ids.dim()))
               else "its input's units vary along other dims than the one it reads")
        col = _unit_vector(vx.ids, unit_dim, lambda: _LayoutError(str(self.refuse(op, why))))
        w3 = weight.reshape(weight.shape[0], weight.shape[1], -1)
        pos3 = positions.reshape(w3.shape) if positions is not None else None
        made = self._link(param, pos3, w3, col, groups, self.where())
        if made is None:
            return
        _, base = made
        self.put(out, Units(_along(base + torch.arange(out.shape[unit_dim]), unit_dim, out.shape)))

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
            made = self._link(b.param, None if pos is None else pos.T.contiguous()[:, :, None],
                              wt[:, :, None], _unit_vector(a.ids, -1, lambda: _LayoutError(str(self.refuse(
                                  op, "its input's units vary along other dims than the one it reads")))), 1,
                              self.where())
            if made is not None:
                ids = _along(made[1] + torch.arange(shape[-1]), -1, shape)
                self._put_out(out, ids, reshape_out)
            return
        if a.kind in ("weight", "const") and b.kind == "units":
            if a.tensor.dim() != 2 and not all(s == 1 for s in a.tensor.shape[:-2]):
                raise self.refuse(op, "it multiplies a batched constant by an activation")
            pos = a.positions_matrix()
            made = self._link(a.param, None if pos is None else pos[:, :, None], a.matrix()[:, :, None],
                              _unit_vector(b.ids, -2, lambda: _LayoutError(str(self.refuse(
                                  op, "its input's units vary along other dims than the one it reads")))), 1,
                              self.where())
            if made is not None:
                ids = _along(made[1] + torch.arange(shape[-2]), -2, shape)
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
                site, output=self.get(out).ids, output_heads=_entry_heads(self.get(out).ids, site))
            return
        if a.kind == "const" and b.kind == "attention" or a.kind == "attention" and b.kind == "const":
            self.put(out, a.value if a.kind == "attention" else b.value)
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

    # -- helpers --------------------------------------------------------------------------------------------------
    def _activation(self, op: Op, acts: list[tuple[Tensor, Any]]) -> Tensor:
        units = [v for _, v in acts if isinstance(v, Units)]
        if len(units) != 1 or len(acts) != 1:
            raise self.refuse(op, "pwmpr knows this op on one activation")
        return units[0].ids

    def _feature(self, op: Op, ids: Tensor, token_dim: int) -> Tensor:
        """The unit ids of an attention operand with its token dim reduced (kept as size 1)."""
        if not _constant_along(ids, token_dim):
            raise self.refuse(op, "the units of an attention operand vary over its tokens")
        return ids.amax(dim=token_dim, keepdim=True)

    def _attention_output(self, op: Op, feats: list[Tensor | None], shape: tuple[int, ...], site: int) -> Tensor:
        """Ids of ``attention @ v``: q, k and v units meet (like a 3-way residual add) where they line up; the site
        is recorded for the attention-aware growth rules."""
        present = [f for f in feats if f is not None]
        try:
            common = torch.broadcast_shapes(*(f.shape for f in present))
            merged = self._merge([f.expand(common) for f in present], "attention")
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
        self.sites[site] = dataclasses.replace(record, output_heads=_entry_heads(out, record))
        return out


def _entry_heads(output: Tensor, site: AttentionSite) -> Tensor:
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
    return _first_appearance(ids[ids >= 0])


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


class _Operand:
    """One factor of a contraction: an activation (units), a prunable weight view, a constant, or attention scores."""

    def __init__(self, kind: str, tensor: Tensor, value: Any = None, ids: Tensor | None = None,
                 param: str | None = None, positions: Tensor | None = None, values: Tensor | None = None) -> None:
        self.kind, self.tensor, self.value, self.ids = kind, tensor, value, ids
        self.param, self.positions, self.values = param, positions, values

    @classmethod
    def of(cls, tracer: UnitTracer, t: Tensor) -> _Operand:
        v = tracer.get(t)
        if isinstance(v, Units):
            return cls("units", t, v, ids=v.ids)
        if isinstance(v, _MARKERS):
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


# -- shadow helpers ---------------------------------------------------------------------------------------------------


def _along(vec: Tensor, dim: int, shape: Sequence[int]) -> Tensor:
    """``vec`` laid along ``dim`` of a tensor of ``shape`` (broadcast over the other dims)."""
    dim = dim % len(shape)
    view = [1] * len(shape)
    view[dim] = -1
    return vec.view(view).expand(tuple(shape))


def _constant_along(ids: Tensor, dim: int) -> bool:
    """True when the units do not vary along ``dim`` (entries without a unit aside)."""
    top = ids.amax(dim=dim, keepdim=True)
    return bool(((ids == top) | (ids < 0)).all())


def _unit_vector(ids: Tensor, dim: int, error) -> Tensor:
    """The unit of each position along ``dim`` (-1: none); ``error()`` is raised when units vary along other dims."""
    moved = ids.movedim(dim, -1).reshape(-1, ids.shape[dim])
    unit = moved.amax(0)
    if not bool(((moved == unit) | (moved < 0)).all()):
        exc = error()
        if exc is not None:
            raise exc
    return unit


def _cpu_index(index: Any) -> Any:
    """An index with every tensor in it moved to the CPU (to index a shadow)."""
    if isinstance(index, Tensor):
        return index.cpu()
    if isinstance(index, (tuple, list)):
        return type(index)(_cpu_index(i) for i in index)
    return index


def _first_appearance(ids: Tensor) -> Tensor:
    """The distinct values of ``ids`` in the order they first appear."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((uniq.numel(),), ids.numel(), dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(ids.numel()), "amin")
    return uniq[torch.argsort(first)]


def _reduced_dims(op: Op, args: tuple, kwargs: dict, ndim: int) -> list[int]:
    """The dims a reduction runs over (all of them when none is given)."""
    dims = kwargs.get("dim", kwargs.get("axis"))
    if dims is None:
        for a in args[1:3]:
            if isinstance(a, int) and not isinstance(a, bool) or isinstance(a, (tuple, list)) and a and all(
                    isinstance(d, int) for d in a):
                dims = a
                break
    if dims is None:
        return list(range(ndim))
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted({d % ndim for d in dims})
