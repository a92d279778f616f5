"""The unit graph as the tracer builds it: groups, links through weights, merges (docs/method.md, Seed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from pwmpr.errors import PwmprError
from pwmpr.graph.shadow import constant_along, first_appearance
from pwmpr.graph.units import Link, UnitGroup


class GroupBuilder:
    """Groups and links of a unit graph under construction, with the global unit ids of every group."""

    def __init__(self) -> None:
        self.groups: list[UnitGroup] = []
        self.links: list[Link] = []
        self.bases: list[int] = []
        self.total = 0
        self._gathers: dict[bytes, int] = {}

    def new_group(self, n: int, kind: str, name: str, **fields: Any) -> int:
        """Add a group of ``n`` units (global ids from the next free one); returns its index."""
        self.groups.append(UnitGroup(n=n, kind=kind, name=name, **fields))
        self.bases.append(self.total)
        self.total += n
        return len(self.groups) - 1

    def owner(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Group and local unit of global ids (all valid)."""
        bases = torch.tensor(self.bases, dtype=torch.long)
        g = torch.searchsorted(bases, ids, right=True) - 1
        return g, ids - bases[g]

    def as_group(self, col: Tensor, name: str) -> tuple[int, Tensor]:
        """The group a vector of global ids (one per input feature of a link) reads from, and the local unit of each
        feature (-1: none); ids from several groups are gathered into a merge group first."""
        valid = col >= 0
        groups, local = self.owner(col[valid])
        if bool((groups == groups[0]).all()):
            out = torch.full_like(col, -1)
            out[valid] = local
            return int(groups[0]), out
        return self.gather(col, name)

    def gather(self, col: Tensor, name: str) -> tuple[int, Tensor]:
        """A merge group whose units are the distinct ids of ``col`` (in order of first appearance)."""
        valid = col >= 0
        ids = col[valid]
        key = ids.numpy().tobytes()
        if key not in self._gathers:
            uniq = first_appearance(ids)
            g, local = self.owner(uniq)
            m = self.new_group(uniq.numel(), "merge", f"gather:{name}", src_group=g[:, None].clone(),
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

    def merge(self, operands: Sequence[Tensor], name: str) -> Tensor:
        """Ids of an elementwise op on activations with unit ids ``operands`` (broadcast to one shape).

        Each distinct tuple of ids meeting in an entry becomes one unit of a new merge group, in order of appearance.
        """
        first = operands[0]
        if all(torch.equal(first, o) for o in operands[1:]):
            return first
        # Dims along which no operand's units vary add no new tuples: reduce them away first.
        small = list(operands)
        for d in range(first.dim()):
            if first.shape[d] > 1 and all(constant_along(o, d) for o in small):
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
                rank_groups += self.owner(first_appearance(col))[0].tolist()
        rank = {g: r for r, g in enumerate(dict.fromkeys(rank_groups))}
        rank_of = torch.full((len(self.groups),), len(rank), dtype=torch.long)
        rank_of[torch.tensor(list(rank))] = torch.arange(len(rank))
        src = distinct[kids]  # [children, arity]
        valid = src >= 0
        g, local = torch.full_like(src, -1), torch.full_like(src, -1)
        g[valid], local[valid] = self.owner(src[valid])
        sort_key = torch.where(valid, rank_of[g.clamp(min=0)] * (self.total + 1) + local,
                               torch.full_like(src, len(rank) * (self.total + 1)))
        perm = torch.argsort(sort_key, dim=1, stable=True)
        src_group, src_unit = g.gather(1, perm), local.gather(1, perm)
        width = int(valid.sum(1).max())
        m = self.new_group(kids.numel(), "merge", name, src_group=src_group[:, :width].contiguous(),
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

    def link(self, param: str | None, positions: Tensor | None, weight: Tensor, col: Tensor, groups: int,
              name: str) -> tuple[int, int] | None:
        """A link from the units ``col`` (global ids per input feature, per group of a grouped conv) through
        ``weight`` (``|W0|``, ``[n_out, n_in, n_kernel]``); returns ``(group, base id)`` of its outputs, or None when
        no input feature carries a unit."""
        if not bool((col >= 0).any()):
            return None
        src, local = self.as_group(col, name)
        weight = weight.detach().float().cpu()
        if weight.stride(0) != 0:  # a kernel shared by every group (stride 0) stays one tensor, broadcast
            weight = weight.contiguous()
        link = Link(param=param, src=src, dst=-1, weight=weight,
                    col_unit=local, n_src=self.groups[src].n, groups=groups, positions=positions)
        if groups > 1 and bool(torch.bincount(local[local >= 0], minlength=1).max() > 1):
            raise PwmprError(f"PHEW cannot follow {name}: a grouped convolution reads one unit twice")
        self.links.append(link)
        dst = self.new_group(weight.shape[0], "layer", name, link=len(self.links) - 1)
        link.dst = dst
        self.groups[src].consumers.append(("link", len(self.links) - 1))
        return dst, self.bases[dst]

    def drop_dead_ends(self, output: int) -> None:
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
