"""The unit graph: groups of units linked by weights and merged by elementwise ops, and what PHEW walks need of it.

Filled by ``pwmpr.graph.trace``; path masses are in log scale (docs/method.md, Seed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

_CHUNK = 1 << 22  # entries of a link's float64 strengths computed at once


@dataclass
class Link:
    """One use of a weight as a bipartite link from ``src`` units to ``dst`` units.

    ``weight`` is ``|W0|`` as used, ``[n_dst, n_in, n_kernel]``; ``col_unit`` maps input features to source units
    (-1: none); ``positions`` maps entries to flat indices of ``param`` (None for a fixed weight).
    """

    param: str | None
    src: int
    dst: int
    weight: Tensor
    col_unit: Tensor
    n_src: int
    groups: int = 1
    positions: Tensor | None = None

    @property
    def n_dst(self) -> int:
        return self.weight.shape[0]

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_kernel(self) -> int:
        return self.weight.shape[2]

    @cached_property
    def unit_features(self) -> Tensor:
        """``[n_src, max_features]``: the input features (sorted) carrying each source unit, -1 padded (groups 1)."""
        valid = self.col_unit >= 0
        feats = torch.nonzero(valid).squeeze(1)
        units = self.col_unit[feats]
        counts = torch.bincount(units, minlength=self.n_src)
        width = max(1, int(counts.max()) if counts.numel() else 1)
        order = torch.argsort(units, stable=True)
        feats, units = feats[order], units[order]
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(feats.numel()) - start[units]
        table = torch.full((self.n_src, width), -1, dtype=torch.long)
        table[units, slot] = feats
        return table

    @cached_property
    def cells(self) -> Tensor:
        """``[n_dst, n_src, n_cells]`` (groups 1): ``|W0|`` of the entries linking each pair, 0 where padded."""
        feats = self.unit_features
        if torch.equal(feats.view(-1), torch.arange(self.n_in)):  # each unit's features in one run, units in order
            return self.weight.reshape(self.n_dst, self.n_src, -1)
        w = self.weight[:, feats.clamp(min=0), :] * (feats >= 0)[None, :, :, None]
        return w.reshape(self.n_dst, self.n_src, -1)

    @cached_property
    def cell_valid(self) -> Tensor:
        """``[n_src, n_cells]`` (groups 1): which cells of a unit are real entries (False where padded)."""
        return (self.unit_features >= 0).repeat_interleave(self.n_kernel, dim=1)

    @property
    def n_cells(self) -> int:
        return self.cells.shape[2] if self.groups == 1 else self.n_kernel

    @cached_property
    def strength(self) -> Tensor:
        """``N[o, c]``: summed ``|W0|`` between dst unit ``o`` and src unit ``c`` (float64; groups 1 only)."""
        return self.cells.sum(-1, dtype=torch.float64)

    # -- grouped links: per dst unit, its group's input features ----------------------------------------------------
    @cached_property
    def local_strength(self) -> Tensor:
        """``[n_dst, n_in]``: summed ``|W0|`` over the kernel per (dst unit, input feature of its group), float64."""
        return self.weight.sum(-1, dtype=torch.float64)

    @cached_property
    def local_src(self) -> Tensor:
        """``[n_dst, n_in]``: the source unit each (dst unit, input feature of its group) reads, -1 for none."""
        per_group = self.n_dst // self.groups
        base = (torch.arange(self.n_dst) // per_group) * self.n_in
        return self.col_unit[base[:, None] + torch.arange(self.n_in)[None, :]]

    @cached_property
    def feature_of_unit(self) -> Tensor:
        """``[n_src]`` (grouped links): the input channel carrying each source unit, -1 for none."""
        out = torch.full((self.n_src,), -1, dtype=torch.long)
        valid = self.col_unit >= 0
        out[self.col_unit[valid]] = torch.nonzero(valid).squeeze(1)
        return out

    # -- masses and reachability ------------------------------------------------------------------------------------
    @cached_property
    def is_zero(self) -> bool:
        """True when every ``|W0|`` entry is 0 (a zero-initialized layer)."""
        return not bool(self.weight.any())

    def forward_mass(self, vec: Tensor, structure: bool = False) -> Tensor:
        """``N @ vec``: the mass a source-unit vector sends to each dst unit (``structure``: entries count 1)."""
        if self.groups == 1:
            if self._large_plain and not structure:
                return torch.cat([chunk.double() @ vec for chunk in self._row_chunks()])
            n = (self.cells_valid_dense() if structure else self.strength)
            return n @ vec
        src = self.local_src
        s = torch.ones_like(self.local_strength) if structure else self.local_strength
        return (s * vec[src.clamp(min=0)] * (src >= 0)).sum(1)

    def backward_mass(self, vec: Tensor, structure: bool = False) -> Tensor:
        """``N^T @ vec``: the mass a dst-unit vector sends back to each source unit."""
        if self.groups == 1:
            if self._large_plain and not structure:
                out = torch.zeros(self.n_src, dtype=torch.float64)
                start = 0
                for chunk in self._row_chunks():
                    out += chunk.double().T @ vec[start : start + chunk.shape[0]]
                    start += chunk.shape[0]
                return out
            n = (self.cells_valid_dense() if structure else self.strength)
            return n.T @ vec
        src = self.local_src
        ok = src >= 0
        s = torch.ones_like(self.local_strength) if structure else self.local_strength
        return torch.zeros(self.n_src, dtype=vec.dtype).index_add_(0, src[ok], (s * vec[:, None])[ok])

    @property
    def _large_plain(self) -> bool:
        """A large link without kernel cells: its masses are computed in row chunks (no float64 copy of it all)."""
        return self.n_cells == 1 and self.weight.numel() > _CHUNK

    def _row_chunks(self) -> list[Tensor]:
        rows = max(1, _CHUNK // max(1, self.n_src))
        return list(self.cells[:, :, 0].split(rows))

    def cells_valid_dense(self) -> Tensor:
        """``[n_dst, n_src]`` (groups 1): the number of entries linking each pair, float64."""
        return self.cell_valid.sum(1, dtype=torch.float64)[None, :].expand(self.n_dst, self.n_src)

    def enabled(self, masks: Mapping[str, Tensor]) -> Tensor:
        """Whether each entry as used is enabled, ``[n_dst, n_in, n_kernel]`` (a missing mask or a fixed weight:
        all)."""
        if self.param is None or self.param not in masks:
            return torch.ones(self.weight.shape, dtype=torch.bool)
        flat = masks[self.param].detach().cpu().bool().reshape(-1)
        if self.positions is None:
            return flat.view(self.weight.shape)
        return flat[self.positions].expand(self.weight.shape)

    def reach_forward(self, masks: Mapping[str, Tensor], alive_src: Tensor) -> Tensor:
        """Dst units an enabled entry reaches from a live source unit."""
        if (self.param is None or self.param not in masks) and self.groups == 1:
            valid = self.col_unit >= 0
            return torch.full((self.n_dst,), bool(alive_src[self.col_unit[valid]].any()), dtype=torch.bool)
        on = self.enabled(masks).any(-1)
        src = self._src_per_entry()
        return (on & (src >= 0) & alive_src[src.clamp(min=0)]).any(1)

    def reach_backward(self, masks: Mapping[str, Tensor], alive_dst: Tensor) -> Tensor:
        """Source units from which an enabled entry reaches a live dst unit."""
        if (self.param is None or self.param not in masks) and self.groups == 1:
            out = torch.zeros(self.n_src, dtype=torch.bool)
            if bool(alive_dst.any()):
                out[self.col_unit[self.col_unit >= 0]] = True
            return out
        on = self.enabled(masks).any(-1) & alive_dst[:, None]
        src = self._src_per_entry()
        ok = on & (src >= 0)
        out = torch.zeros(self.n_src, dtype=torch.bool)
        out[src[ok]] = True
        return out

    def live_entries(self, fwd_src: Tensor, bwd_dst: Tensor) -> Tensor:
        """``[n_dst, n_in, n_kernel]``: entries between a unit reached from the input and one reaching the output."""
        src = self._src_per_entry()
        ok = bwd_dst[:, None] & (src >= 0) & fwd_src[src.clamp(min=0)]
        return ok[:, :, None].expand(self.weight.shape)

    def _src_per_entry(self) -> Tensor:
        if self.groups == 1:
            return self.col_unit[None, :].expand(self.n_dst, self.n_in)
        return self.local_src

    def flat_positions(self, entries: Tensor) -> Tensor:
        """Flat indices into the parameter of entries given as flat indices into ``weight``."""
        if self.positions is None:
            return entries
        return self.positions[torch.unravel_index(entries, self.positions.shape)]  # no copy of a shared kernel's

    @cached_property
    def shared_kernel(self) -> Tensor | None:
        """``[n_kernel]``: the one kernel every (dst unit, input feature) of a grouped link reads, when they share
        it (a linear over tokens, which every channel applies: stored once, broadcast); else None."""
        if self.groups == 1 or self.weight.stride(0) != 0 or self.n_in != 1 and self.weight.stride(1) != 0:
            return None
        return self.weight[0, 0]


@dataclass
class UnitGroup:
    """A set of ``n`` units; ``kind`` is ``input``, ``layer`` (made by link ``link``) or ``merge``.

    A merge unit ``u`` is fed by ``sources[u, s]`` (group, unit) pairs (``-1``: none).
    """

    n: int
    kind: str
    name: str
    link: int | None = None
    operands: list[int] = field(default_factory=list)
    src_group: Tensor | None = None  # [n, arity] for merges
    src_unit: Tensor | None = None  # [n, arity] for merges
    consumers: list[tuple[str, int]] = field(default_factory=list)  # ("link", link id) or ("merge", group id)


@dataclass(frozen=True)
class AttentionSite:
    """One attention in the forward (``softmax(q k^T) v`` in any spelling): unit ids and heads of q, k, v, output."""

    name: str
    q: Tensor
    k: Tensor
    v: Tensor
    q_heads: Tensor
    k_heads: Tensor
    out_units: Tensor
    out_heads: Tensor
    output: Tensor
    output_heads: Tensor


@dataclass
class UnitGraph:
    """Unit groups in topological order (group 0 is the input), the links between them, and the attention sites."""

    groups: list[UnitGroup]
    links: list[Link]
    output: int
    bases: list[int] = field(default_factory=list)
    attention: list[AttentionSite] = field(default_factory=list)
    #: Prunable weights the forward applied to constants (a position-bias MLP over fixed coordinates): where they
    #: have no link besides, they compute constants, on no path from the input.
    on_constants: list[str] = field(default_factory=list)

    def owner(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Group and local unit of global unit ids."""
        bases = torch.tensor(self.bases, dtype=torch.long)
        g = torch.searchsorted(bases, ids, right=True) - 1
        return g, ids - bases[g]

    @property
    def n_inputs(self) -> int:
        return self.groups[0].n

    @property
    def n_outputs(self) -> int:
        return self.groups[self.output].n

    def params(self) -> list[str]:
        """Names of the prunable weights the graph walks through (each once, in order of first use)."""
        return list(dict.fromkeys(link.param for link in self.links if link.param is not None))

    def params_to_output(self) -> list[str]:
        """The weights of :meth:`params` with a use that leads on to the class scores (not only to another output,
        as an auxiliary head's)."""
        leads = [g == self.output or bool(group.consumers) for g, group in enumerate(self.groups)]
        return list(dict.fromkeys(link.param for link in self.links if link.param is not None and leads[link.dst]))

    def depth(self) -> int:
        """The largest number of links on an input-to-output path."""
        longest = [0] * len(self.groups)
        for g, group in enumerate(self.groups):
            if group.kind == "layer":
                longest[g] = longest[self.links[group.link].src] + 1
            elif group.kind == "merge":
                longest[g] = max(longest[o] for o in group.operands)
        return longest[self.output]

    # -- merges ---------------------------------------------------------------------------------------------------
    def merge_terms(self, g: int, vectors: Sequence[tuple[Tensor, float]]) -> list[tuple[Tensor, float]]:
        """Per operand of merge ``g``, the log-scaled vector its units contribute to the merge's units."""
        group = self.groups[g]
        terms = []
        for op in group.operands:
            vec, scale = vectors[op]
            sel = group.src_group == op
            out = torch.zeros(group.n, dtype=torch.float64)
            rows = torch.nonzero(sel)
            if _is_identity(group, op, vec.numel()):
                out = vec.clone()
            else:
                out.index_put_((rows[:, 0],), vec[group.src_unit[sel]], accumulate=True)
            terms.append((out, scale))
        return terms

    def merge_back(self, g: int, m: int, vec: Tensor) -> Tensor:
        """A vector over the units of merge ``m`` sent back to the units of its operand ``g`` (summed per unit)."""
        group = self.groups[m]
        if _is_identity(group, g, self.groups[g].n):
            return vec.clone()
        sel = group.src_group == g
        rows = torch.nonzero(sel)[:, 0]
        return torch.zeros(self.groups[g].n, dtype=vec.dtype).index_add_(0, group.src_unit[sel], vec[rows])

    def accepts(self, g: int) -> Tensor:
        """``[n, n_consumers]``: whether each consumer of group ``g`` reads each of its units."""
        group = self.groups[g]
        cols = []
        for kind, idx in group.consumers:
            if kind == "link":
                link = self.links[idx]
                col = torch.zeros(group.n, dtype=torch.bool)
                col[link.col_unit[link.col_unit >= 0]] = True
            else:
                col = self.merge_back(g, idx, torch.ones(self.groups[idx].n, dtype=torch.float64)) > 0
            cols.append(col)
        return torch.stack(cols, 1)

    # -- masses ----------------------------------------------------------------------------------------------------
    def path_masses(self, zero_links_as_structure: bool = False
                    ) -> tuple[list[tuple[Tensor, float]], list[tuple[Tensor, float]]]:
        """Forward (``F``) and backward (``B``) path masses per group, each ``(vector scaled to max 1, log scale)``.

        ``zero_links_as_structure``: an all-zero link counts each entry as 1 (PHEW's "uniform when the sum is 0").
        """
        self._structure = zero_links_as_structure
        fwd: list[tuple[Tensor, float]] = []
        for g, group in enumerate(self.groups):
            if group.kind == "input":
                fwd.append((torch.ones(group.n, dtype=torch.float64), 0.0))
            elif group.kind == "layer":
                link = self.links[group.link]
                vec, scale = fwd[link.src]
                fwd.append(_rescale(link.forward_mass(vec, self._uses_structure(link)), scale))
            else:
                fwd.append(_log_sum(self.merge_terms(g, fwd)))
        bwd: list[tuple[Tensor, float]] = [(torch.zeros(0), -math.inf)] * len(self.groups)
        for g in reversed(range(len(self.groups))):
            if g == self.output:
                bwd[g] = (torch.ones(self.groups[g].n, dtype=torch.float64), 0.0)
            else:
                bwd[g] = _log_sum(self.branch_masses(g, bwd) or [_zero(self.groups[g].n)])
        return fwd, bwd

    def _uses_structure(self, link: Link) -> bool:
        return getattr(self, "_structure", False) and link.is_zero

    def branch_masses(self, g: int, bwd: Sequence[tuple[Tensor, float]]) -> list[tuple[Tensor, float]]:
        """Backward mass that reaches the output through each consumer of group ``g`` (per unit, log-scaled)."""
        out = []
        for kind, idx in self.groups[g].consumers:
            if kind == "link":
                vec, scale = bwd[self.links[idx].dst]
                link = self.links[idx]
                out.append(_rescale(link.backward_mass(vec, self._uses_structure(link)), scale))
            else:
                vec, scale = bwd[idx]
                out.append((self.merge_back(g, idx, vec), scale))
        return out

    # -- reachability under masks ------------------------------------------------------------------------------------
    def live_units(self, masks: Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per group, the units an enabled path reaches from the input (``fwd``) and that reach the output (``bwd``)."""
        fwd: list[Tensor] = []
        for g, group in enumerate(self.groups):
            if group.kind == "input":
                fwd.append(torch.ones(group.n, dtype=torch.bool))
            elif group.kind == "layer":
                link = self.links[group.link]
                fwd.append(link.reach_forward(masks, fwd[link.src]))
            else:
                terms = self.merge_terms(g, [(f.double(), 0.0) for f in fwd] + [(torch.zeros(0), 0.0)])
                fwd.append(torch.stack([t for t, _ in terms]).sum(0) > 0)
        bwd: list[Tensor] = [torch.zeros(0, dtype=torch.bool)] * len(self.groups)
        for g in reversed(range(len(self.groups))):
            alive = torch.zeros(self.groups[g].n, dtype=torch.bool)
            if g == self.output:
                alive[:] = True
            for kind, idx in self.groups[g].consumers:
                if kind == "link":
                    alive |= self.links[idx].reach_backward(masks, bwd[self.links[idx].dst])
                else:
                    alive |= self.merge_back(g, idx, bwd[idx].double()) > 0
            bwd[g] = alive
        return fwd, bwd

    def dead_edges(self, masks: Mapping[str, Tensor]) -> dict[str, int]:
        """Per walked weight, the number of enabled entries that lie on no enabled input-to-output path."""
        fwd, bwd = self.live_units(masks)
        live: dict[str, Tensor] = {}
        for link in self.links:
            if link.param is None or link.param not in masks:
                continue
            ok = link.live_entries(fwd[link.src], bwd[link.dst]).reshape(-1)
            flat = live.setdefault(link.param, torch.zeros(masks[link.param].numel(), dtype=torch.bool))
            flat[link.flat_positions(torch.nonzero(ok).squeeze(1))] = True
        return {name: int((masks[name].cpu().bool().reshape(-1) & ~ok).sum()) for name, ok in live.items()}


def _is_identity(group: UnitGroup, op: int, n_op: int) -> bool:
    """True when operand ``op``, of ``n_op`` units, feeds merge unit ``u`` from its own unit ``u`` in one slot and
    has no other unit (a residual add; an add into a slice of the operand is not one)."""
    sel = group.src_group == op
    if n_op != group.n or int(sel.sum()) != group.n or group.n == 0:
        return False
    slot = sel.int().argmax(1)
    return bool((sel.sum(1) == 1).all()) and torch.equal(
        group.src_unit.gather(1, slot[:, None]).squeeze(1), torch.arange(group.n))


def _zero(n: int) -> tuple[Tensor, float]:
    return torch.zeros(n, dtype=torch.float64), -math.inf


def _rescale(vec: Tensor, scale: float) -> tuple[Tensor, float]:
    """``(vec, scale)`` with ``vec`` rescaled to max 1 and the factor moved into the log scale."""
    top = float(vec.max()) if vec.numel() else 0.0
    if top <= 0.0 or scale == -math.inf:
        return _zero(vec.numel())
    return vec / top, scale + math.log(top)


def _log_sum(terms: Sequence[tuple[Tensor, float]]) -> tuple[Tensor, float]:
    """Sum of log-scaled vectors."""
    top = max(scale for _, scale in terms)
    if top == -math.inf:
        return _zero(terms[0][0].numel())
    vec = sum(v * math.exp(s - top) for v, s in terms if s != -math.inf)
    return _rescale(vec, top)


def mixing_weights(terms: Sequence[tuple[Tensor, float]]) -> Tensor:
    """``[n, k]`` weights proportional to the ``k`` log-scaled masses per unit; all-zero rows mean "no preference"."""
    top = max(scale for _, scale in terms)
    if top == -math.inf:
        return torch.zeros(terms[0][0].numel(), len(terms), dtype=torch.float64)
    return torch.stack([v * math.exp(s - top) if s != -math.inf else torch.zeros_like(v) for v, s in terms], 1)
