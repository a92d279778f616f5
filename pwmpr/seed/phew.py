"""PHEW seed masks (docs/method.md, Seed): biased random input-output walks on the model's compute graph."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pwmpr.errors import PwmprError
from pwmpr.graph import Link, UnitGraph, build_unit_graph, mixing_weights
from pwmpr.masks import MaskSet, prunable
from pwmpr.seed.common import SEEDS, check_seed_args, n_target, per_layer_masks
from pwmpr.seed.sampling import CDF_CACHE_MAX, RowSampler, cell_cdf, sample_cells

_MAX_ROUND = 1 << 15  # walks per batch: bounds the memory of one sweep
_NEVER = torch.iinfo(torch.int32).max


@SEEDS.register("phew")
def phew_masks(model: nn.Module, density: float, input_shape: Sequence[int], seed: int = 0) -> MaskSet:
    """PHEW seed masks: enable weights along biased random input-output walks until ``density`` is reached.

    Walks alternate forward (from input units) and backward (from classes), hop by kernel L1 norm and cell by
    ``|W0|`` over the real compute graph, in batches, never truncated; the mask is the union of the shortest prefix
    of walks that enables ``round(density * n)`` weights, ``n`` the prunable weights but those applied to constants
    alone, which are kept whole (docs/method.md, Seed, with each departure from the
    reference code).

    Args:
        model: the network at initialisation; its weights are read, never changed.
        density: fraction of prunable weights to keep, in ``(0, 1]``; 1 gives all-True masks.
        input_shape: one input without the batch dimension, e.g. ``(3, 32, 32)`` or ``(784,)``.
        seed: seeds the walks; the same seed gives the same masks.

    Returns:
        A MaskSet over every prunable weight; layers no walk can reach stay all-False, and a weight applied to
        constants alone (it computes a constant, as a position-bias MLP over fixed coordinates does) is kept whole,
        on top of ``density``, which the walks reach over the other weights.

    Raises:
        PwmprError: a bad ``density``, ``input_shape`` or ``seed``, a model op the walks cannot follow, or a
            density the walks cannot reach.
    """
    density, shape, gen = check_seed_args(model, density, input_shape, seed, probe=False)  # the trace probes the shape
    if density == 1.0:
        check_seed_args(model, density, input_shape, seed)
        return MaskSet.dense(model)
    params = dict(model.named_parameters())
    names = prunable(model)
    if not names:
        return MaskSet({})
    graph = build_unit_graph(model, shape)
    offsets, total = {}, 0
    for name in names:
        offsets[name] = total
        total += params[name].numel()
    # A weight the forward applies only to constants (a position-bias MLP over fixed coordinates) lies on no path
    # and computes a constant: it stays whole, where an empty mask would change what it computes; the walks reach
    # ``density`` over the other weights.
    linked = set(graph.params())
    whole = [n for n in graph.on_constants if n in offsets and n not in linked]
    n_whole = sum(params[n].numel() for n in whole)
    target = n_target(density, total - n_whole) if total > n_whole else 0
    first = _PhewWalks(graph, offsets).first_walks(total, target, gen) if target else torch.full(
        (total,), _NEVER, dtype=torch.int32)
    # Shortest prefix of walks whose union reaches the target (counts per walk of the weights it enables first).
    per_walk = torch.bincount(first[first != _NEVER].long())
    n_walks = int(torch.searchsorted(per_walk.cumsum(0), target)) + 1 if target else 0
    keep = first < n_walks
    for n in whole:
        keep[offsets[n]:offsets[n] + params[n].numel()] = True
    return per_layer_masks(keep, names, params)



class _LinkStep:
    """The unit-to-unit hops of one link, forward (src -> dst) and backward (dst -> src), in proportion to ``N``,
    never onto a unit that no path connects to the output (forward) or to the input (backward)."""

    def __init__(self, link: Link, dst_alive: Tensor, src_alive: Tensor) -> None:
        self.link = link
        self.cells_cdf = None
        if link.groups == 1 and link.n_cells > 1 and link.cells.numel() <= CDF_CACHE_MAX:
            table = link.cells.view(-1, link.n_cells)
            self.cells_cdf = cell_cdf(table, link.cell_valid, torch.arange(table.shape[0]) % link.n_src)
        if link.groups == 1:
            # the strengths of a link without kernel cells are its |W0| itself: sample from those (float32)
            n = link.cells[:, :, 0] if link.n_cells == 1 else link.strength
            src_ok = src_alive & (link.unit_features >= 0).any(1)
            self.forward = RowSampler((n if bool(dst_alive.all()) else n * dst_alive[:, None]).T)
            self.backward = RowSampler(n if bool(src_ok.all()) else n * src_ok[None, :], valid=src_ok[None, :])
        else:
            per_group = link.n_dst // link.groups
            feat = link.feature_of_unit
            group = feat.clamp(min=0) // link.n_in
            dst = group[:, None] * per_group + torch.arange(per_group)[None, :]
            table = link.local_strength[dst, (feat.clamp(min=0) % link.n_in)[:, None]] * dst_alive[dst]
            self.forward = RowSampler(table, valid=dst_alive[dst])
            self.fwd_dst = dst
            src = link.local_src
            ok = (src >= 0) & src_alive[src.clamp(min=0)]
            self.backward = RowSampler(link.local_strength * ok, valid=ok)

    def hop_forward(self, c: Tensor, gen: torch.Generator) -> Tensor:
        j = self.forward.sample(c, gen)
        return j if self.link.groups == 1 else self.fwd_dst[c, j]

    def hop_backward(self, o: Tensor, gen: torch.Generator) -> Tensor:
        j = self.backward.sample(o, gen)
        return j if self.link.groups == 1 else self.link.local_src[o, j]


class _MergeStep:
    """A forward hop from an operand's unit into merge ``m``: the merge unit it feeds (in proportion to the merge
    units' backward mass when it feeds several)."""

    def __init__(self, graph: UnitGraph, g: int, m: int, bwd_m: tuple[Tensor, float]) -> None:
        group = graph.groups[m]
        sel = group.src_group == g
        child = torch.nonzero(sel)[:, 0]
        unit = group.src_unit[sel]
        order = torch.argsort(unit * (group.n + 1) + child)
        unit, child = unit[order], child[order]
        counts = torch.bincount(unit, minlength=graph.groups[g].n)
        width = max(1, int(counts.max()))
        slot = torch.arange(unit.numel()) - (torch.cumsum(counts, 0) - counts)[unit]
        self.children = torch.zeros(graph.groups[g].n, width, dtype=torch.long)
        self.children[unit, slot] = child
        valid = torch.zeros(graph.groups[g].n, width, dtype=torch.bool)
        valid[unit, slot] = True
        self.sampler = RowSampler(torch.where(valid, bwd_m[0][self.children], 0.0), valid=valid) if width > 1 else None

    def hop(self, c: Tensor, gen: torch.Generator) -> Tensor:
        if self.sampler is None:
            return self.children[c, 0]
        return self.children[c, self.sampler.sample(c, gen)]


class _PhewWalks:
    """Batched PHEW walks over a unit graph: a topological sweep carrying walker positions group by group."""

    def __init__(self, graph: UnitGraph, offsets: dict[str, int]) -> None:
        self.graph = graph
        self.offsets = offsets
        fwd, bwd = graph.path_masses()
        if fwd[graph.output][1] == -math.inf:  # a zero-initialized layer on every path (a ViT's head, say)
            fwd, bwd = graph.path_masses(zero_links_as_structure=True)
        reach_in, reach_out = graph.live_units({})
        self.steps = [_LinkStep(link, reach_out[link.dst], reach_in[link.src]) for link in graph.links]
        self.fork = {
            g: RowSampler(mixing_weights(graph.branch_masses(g, bwd)), valid=graph.accepts(g))
            for g, group in enumerate(graph.groups)
            if len(group.consumers) > 1
        }
        self.into = {(g, idx): _MergeStep(graph, g, idx, bwd[idx])
                     for g, group in enumerate(graph.groups) for kind, idx in group.consumers if kind == "merge"}
        self.join = {}
        for g, group in enumerate(graph.groups):
            if group.kind != "merge":
                continue
            top = max(fwd[o][1] for o in group.operands)
            table = torch.zeros(group.src_group.shape, dtype=torch.float64)
            for o in group.operands:
                vec, scale = fwd[o]
                if scale == -math.inf:
                    continue
                sel = group.src_group == o
                table[sel] = vec[group.src_unit[sel]] * math.exp(scale - top)
            self.join[g] = RowSampler(table, valid=group.src_group >= 0)

    def first_walks(self, total: int, target: int, gen: torch.Generator) -> Tensor:
        """For each of the ``total`` prunable weights, the first walk that enables it (``_NEVER`` if none).

        Walks run in batches until at least ``target`` weights are enabled; batch sizes follow the measured
        yield of new weights per walk.
        """
        first = torch.full((total,), _NEVER, dtype=torch.int32)
        n_walks, covered = 0, 0
        batch = min(_MAX_ROUND, max(64, math.ceil(target / max(1, self.graph.depth()))))
        idle = 0
        while covered < target:
            ids = torch.arange(n_walks, n_walks + batch)
            edges, walkers = self._walk(ids, gen)
            gained = int(torch.unique(edges[first[edges] == _NEVER]).numel())
            first.scatter_reduce_(0, edges, walkers.to(torch.int32), "amin")
            n_walks += batch
            covered += gained
            idle = idle + 1 if gained == 0 else 0
            if idle >= 3 and batch == _MAX_ROUND:
                raise PwmprError(
                    f"density {target / total:.4g} is out of reach of PHEW walks on this model: {covered} of "
                    f"{target} weights enabled after {n_walks} walks; use a lower density"
                )
            rate = max(gained, 1) / batch
            batch = min(_MAX_ROUND, max(64, math.ceil(1.1 * (target - covered) / rate)))
        return first

    def _walk(self, ids: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Run walks ``ids`` (even: forward, odd: backward); return the flat ids of enabled weights and walk ids."""
        edges: list[Tensor] = []
        walkers: list[Tensor] = []
        fwd_ids, bwd_ids = ids[ids % 2 == 0], ids[ids % 2 == 1]
        self._forward(fwd_ids, (fwd_ids // 2) % self.graph.n_inputs, gen, edges, walkers)
        self._backward(bwd_ids, (bwd_ids // 2) % self.graph.n_outputs, gen, edges, walkers)
        if not edges:  # a graph without links: nothing to enable
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
        return torch.cat(edges), torch.cat(walkers)

    def _enable(self, step: _LinkStep, o: Tensor, c: Tensor, ids: Tensor, gen, edges: list[Tensor],
                walkers: list[Tensor]) -> None:
        link = step.link
        cell = sample_cells(link, o, c, gen, step.cells_cdf)
        if link.param is not None:  # a fixed weight is crossed without enabling anything
            edges.append(self.offsets[link.param] + cell)
            walkers.append(ids)

    def _forward(self, ids: Tensor, units: Tensor, gen, edges: list[Tensor], walkers: list[Tensor]) -> None:
        graph = self.graph
        pending: dict[int, list[tuple[Tensor, Tensor]]] = {0: [(ids, units)]}
        for g, group in enumerate(graph.groups):
            if g not in pending or g == graph.output:
                continue
            ids, units = (torch.cat(t) for t in zip(*pending.pop(g), strict=True))
            # Pick a consumer in proportion to its path mass, then hop along it.
            branch = self.fork[g].sample(units, gen) if g in self.fork else torch.zeros_like(units)
            for b, (kind, idx) in enumerate(group.consumers):
                sel = branch == b
                if not bool(sel.any()):
                    continue
                b_ids, b_units = ids[sel], units[sel]
                if kind == "merge":
                    pending.setdefault(idx, []).append((b_ids, self.into[g, idx].hop(b_units, gen)))
                    continue
                link = graph.links[idx]
                o = self.steps[idx].hop_forward(b_units, gen)
                self._enable(self.steps[idx], o, b_units, b_ids, gen, edges, walkers)
                pending.setdefault(link.dst, []).append((b_ids, o))

    def _backward(self, ids: Tensor, units: Tensor, gen, edges: list[Tensor], walkers: list[Tensor]) -> None:
        graph = self.graph
        pending: dict[int, list[tuple[Tensor, Tensor]]] = {graph.output: [(ids, units)]}
        for g in reversed(range(len(graph.groups))):
            if g not in pending or g == 0:
                continue
            ids, units = (torch.cat(t) for t in zip(*pending.pop(g), strict=True))
            group = graph.groups[g]
            if group.kind == "merge":
                # Pick a source in proportion to its forward path mass.
                slot = self.join[g].sample(units, gen)
                src_g, src_u = group.src_group[units, slot], group.src_unit[units, slot]
                for operand in group.operands:
                    sel = src_g == operand
                    if bool(sel.any()):
                        pending.setdefault(operand, []).append((ids[sel], src_u[sel]))
                continue
            link = graph.links[group.link]
            c = self.steps[group.link].hop_backward(units, gen)
            self._enable(self.steps[group.link], units, c, ids, gen, edges, walkers)
            pending.setdefault(link.src, []).append((ids, c))
