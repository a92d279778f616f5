"""Seed masks, step 1 of the pipeline: PHEW random walks (the PWMPR seed) and one-shot baselines.

``SEEDS`` maps a method name to a factory ``(model, density, input_shape, seed) -> MaskSet``:

* ``phew``: PHEW (Patil & Dovrolis 2021; docs/method.md, Seed), biased random input-output walks on the model's real
  compute graph (``pwmpr.graph``), vectorised;
* ``random``: a uniformly random global mask;
* ``magnitude``: global top-|w|;
* ``synflow``: iterative SynFlow (Tanaka et al. 2020), 100 rounds on an exponential schedule.

Seeds only choose masks: they never change the model, and kept weights keep their values (docs/method.md, Seed).
All randomness comes from a ``torch.Generator`` seeded with ``seed``; the global RNG is left alone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pwmpr.errors import PwmprError
from pwmpr.graph import Link, UnitGraph, build_unit_graph, mixing_weights
from pwmpr.masks import MaskSet, flatten_layers, prunable, split_layers
from pwmpr.probe import check_input_shape, normalize_input_shape, training_mode
from pwmpr.registry import Registry
from pwmpr.score import linear_surrogate

SeedFactory = Callable[[nn.Module, float, Sequence[int], int], MaskSet]
SEEDS: Registry[SeedFactory] = Registry("seed method")

_MAX_ROUND = 1 << 15  # walks per batch: bounds the memory of one sweep
_NEVER = torch.iinfo(torch.int64).max


# -- registry entries ---------------------------------------------------------------------------------------------


@SEEDS.register("phew")
def phew_masks(model: nn.Module, density: float, input_shape: Sequence[int], seed: int = 0) -> MaskSet:
    """PHEW seed masks: enable weights along biased random input-output walks until ``density`` is reached.

    Follows PHEW (docs/method.md, Seed; reference code ShreyasMalakarjunPatil/PHEW): walk ``i`` goes forward from
    input unit ``(i // 2) % n_inputs`` when ``i`` is even, backward from class ``(i // 2) % n_classes`` when odd. A
    hop picks the next unit with probability ``N[o, c] / sum_o N[o, c]`` (forward) or ``N[o, c] / sum_c N[o, c]``
    (backward), ``N`` the kernel L1 norm of the initial weights (uniform when the sum is 0), then one kernel cell
    with probability ``|W0[o, c, cell]|``; that single weight is enabled. Input units are input channels (features
    for a flat input). Walks follow the real compute graph (``pwmpr.graph``); where the reference's parameter-order
    heuristic for ResNets jumps to a shortcut with probability 1/2, a walk here picks a branch in proportion to its
    path mass (docs/method.md, Seed): forward, a consumer of unit ``c`` weighs ``sum_o N[o, c] B[o]`` (a link) or
    ``B`` at the merge (an identity path), with ``B`` the backward path mass of the ``N``-weighted channel graph;
    backward, an operand of a merge weighs its forward mass ``F``.

    Walks run in batches and are never truncated (a cut walk leaves dead units). The mask is the union of the
    shortest prefix of walks (in walk order) that enables at least ``round(density * n_total)`` weights, so the
    count overshoots by less than one walk's length (the reference stops at the first walk reaching
    ``int(density * n_total)``: the same rule up to rounding).

    Other deviations from the reference, all documented in ``pwmpr.graph``: a Linear fed by a flattened map picks
    the position within the channel with probability ``|W0|`` (the reference: uniformly; identical after global
    pooling); the stages of a module declaring ``phew_stages`` (the ``q``, ``k``, ``v`` of the pwmpr ViT's
    attention) merge like a residual add into the next stage (``proj``);
    and path masses ignore spatial factors. Because a residual branch's mass grows with the product of its kernel
    norms, walks mostly take the conv branches, and 1x1 shortcut convs end up sparser than the reference's
    coin-flip gives them (0.1-5% of their weights at 5% overall on resnet20/resnet18).

    Args:
        model: the network at initialisation; its weights are read, never changed.
        density: fraction of prunable weights to keep, in ``(0, 1]``; 1 gives all-True masks.
        input_shape: one input without the batch dimension, e.g. ``(3, 32, 32)`` or ``(784,)``.
        seed: seeds the walks; the same seed gives the same masks.

    Returns:
        A MaskSet over every prunable weight; layers no walk can reach stay all-False.

    Raises:
        PwmprError: a bad ``density``, ``input_shape`` or ``seed``, a model op the walks cannot follow, or a
            density the walks cannot reach.
    """
    density, shape, gen = _check_args(model, density, input_shape, seed)
    if density == 1.0:
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
    target = _n_target(density, total)
    first = _PhewWalks(graph, offsets).first_walks(total, target, gen)
    # Shortest prefix of walks whose union reaches the target (counts per walk of the weights it enables first).
    per_walk = torch.bincount(first[first != _NEVER])
    n_walks = int(torch.searchsorted(per_walk.cumsum(0), target)) + 1
    keep = first < n_walks
    return _split(keep, names, params)


@SEEDS.register("random")
def random_masks(model: nn.Module, density: float, input_shape: Sequence[int], seed: int = 0) -> MaskSet:
    """Uniformly random masks keeping exactly ``round(density * n_total)`` weights over all layers together."""
    density, _, gen = _check_args(model, density, input_shape, seed)
    params = dict(model.named_parameters())
    names = prunable(model)
    total = sum(params[n].numel() for n in names)
    keep = torch.zeros(total, dtype=torch.bool)
    keep[torch.randperm(total, generator=gen)[: _n_target(density, total)]] = True
    return _split(keep, names, params)


@SEEDS.register("magnitude")
def magnitude_masks(model: nn.Module, density: float, input_shape: Sequence[int], seed: int = 0) -> MaskSet:
    """Global magnitude masks: the ``round(density * n_total)`` largest ``|w|`` over all layers (``seed`` unused)."""
    density, _, _ = _check_args(model, density, input_shape, seed)
    params = dict(model.named_parameters())
    names = prunable(model)
    if not names:
        return MaskSet({})
    scores = flatten_layers({n: params[n].detach().abs().double().cpu() for n in names}, names)
    return _split(_top(scores, _n_target(density, scores.numel())), names, params)


@SEEDS.register("synflow")
def synflow_masks(model: nn.Module, density: float, input_shape: Sequence[int], seed: int = 0) -> MaskSet:
    """Iterative SynFlow (Tanaka et al. 2020): 100 rounds pruning to ``density ** (k / 100)``, global scope.

    Scores are ``|theta * dR/dtheta|`` with ``R`` the summed output of the float64 |theta| network on an
    all-ones input: ``pwmpr.score.linear_surrogate``, the PWMP scoring net (weights ``|W| * mask``, biases and
    additive parameters 0, BatchNorm/LayerNorm as positive per-unit scales, activations identities, max pooling
    as average pooling, uniform attention). Deterministic (``seed`` unused).
    """
    density, shape, _ = _check_args(model, density, input_shape, seed)
    params = dict(model.named_parameters())
    names = prunable(model)
    if density == 1.0 or not names:
        return MaskSet.dense(model)
    lin = linear_surrogate(model)
    lin_params = dict(lin.named_parameters())
    weights = [lin_params[n].requires_grad_(True) for n in names]
    w0 = [w.detach().clone() for w in weights]
    x = torch.ones((1, *shape), dtype=torch.float64, device=w0[0].device)
    total = sum(w.numel() for w in weights)
    keep = torch.ones(total, dtype=torch.bool)
    for k in range(1, 101):
        with torch.no_grad():
            for w, w_abs, m in zip(weights, w0, keep.split([w.numel() for w in weights]), strict=True):
                w.copy_(w_abs * m.view_as(w_abs).to(w_abs.device))
        # allow_unused: q/k of uniform attention carry no path mass, so they score 0.
        grads = torch.autograd.grad(lin(x).sum(), weights, allow_unused=True)
        scores = torch.cat(
            [
                (g * w).abs().reshape(-1).cpu() if g is not None else torch.zeros(w.numel(), dtype=torch.float64)
                for g, w in zip(grads, weights, strict=True)
            ]
        )
        scores[~keep] = -1.0  # pruned weights stay pruned, even next to zero-score kept ones
        keep = _top(scores, _n_target(density ** (k / 100), total))
    return _split(keep, names, params)


# -- PHEW walks ---------------------------------------------------------------------------------------------------


class _Sampler:
    """Inverse-CDF sampling of one column per requested row of a small nonnegative table; zero rows are uniform.

    The rows' CDFs are laid end to end with row ``r`` shifted by ``r`` (one monotone array), so a whole batch
    is one ``searchsorted``. Columns of probability 0 are never drawn.
    """

    def __init__(self, table: Tensor) -> None:
        rows, self.cols = table.shape
        if self.cols == 1:
            return  # nothing to choose
        t = table.to(torch.float64)
        t = torch.where((t.sum(1) > 0)[:, None], t, torch.ones_like(t))
        cdf = t.cumsum(1)
        cdf = cdf / cdf[:, -1:]  # the last entry is exactly 1.0
        self.flat = (cdf + torch.arange(rows, dtype=torch.float64)[:, None]).reshape(-1)
        self.last = (self.cols - 1) - (t.flip(1) > 0).to(torch.int8).argmax(1)  # last column with mass

    def sample(self, rows: Tensor, gen: torch.Generator) -> Tensor:
        if self.cols == 1:
            return torch.zeros_like(rows)
        u = torch.rand(rows.numel(), generator=gen, dtype=torch.float64)
        col = torch.searchsorted(self.flat, rows.to(torch.float64) + u, right=True) - rows * self.cols
        return torch.minimum(col, self.last[rows])  # r + u can round up to r + 1


def _sample_cells(link: Link, o: Tensor, c: Tensor, gen: torch.Generator) -> Tensor:
    """One kernel cell per ``(o, c)`` pair with probability ``|W0[o, c, cell]|`` (uniform if all are 0).

    Reads the few cells of each requested pair straight from the weight (a per-pair CDF table would cost as
    much memory as the weights in float64).
    """
    k = link.n_cells
    if k == 1:
        return torch.zeros_like(o)
    u = torch.rand(o.numel(), generator=gen, dtype=torch.float64)
    rows = o * link.weight.shape[1] + c
    table = link.weight.view(-1, k)
    out = torch.empty_like(o)
    step = max(1, (1 << 22) // k)
    for start in range(0, o.numel(), step):
        w = table[rows[start : start + step]].to(torch.float64)
        w = torch.where((w.sum(1) > 0)[:, None], w, torch.ones_like(w))
        cdf = w.cumsum(1)
        cdf = cdf / cdf[:, -1:]
        out[start : start + step] = (cdf <= u[start : start + step, None]).sum(1)
    return out


class _PhewWalks:
    """Batched PHEW walks over a unit graph: a topological sweep carrying walker positions group by group."""

    def __init__(self, graph: UnitGraph, offsets: dict[str, int]) -> None:
        self.graph = graph
        self.offsets = offsets
        self.forward_step = [_Sampler(link.strength.T) for link in graph.links]
        self.backward_step = [_Sampler(link.strength) for link in graph.links]
        fwd, bwd = graph.path_masses()
        self.fork = {
            g: _Sampler(mixing_weights(graph.branch_masses(g, bwd)))
            for g, group in enumerate(graph.groups)
            if len(group.consumers) > 1
        }
        self.join = {
            g: _Sampler(mixing_weights([fwd[o] for o in group.operands]))
            for g, group in enumerate(graph.groups)
            if group.kind == "merge"
        }

    def first_walks(self, total: int, target: int, gen: torch.Generator) -> Tensor:
        """For each of the ``total`` prunable weights, the first walk that enables it (``_NEVER`` if none).

        Walks run in batches until at least ``target`` weights are enabled; batch sizes follow the measured
        yield of new weights per walk.
        """
        first = torch.full((total,), _NEVER, dtype=torch.int64)
        n_walks, covered = 0, 0
        batch = min(_MAX_ROUND, max(64, math.ceil(target / max(1, self.graph.depth()))))
        idle = 0
        while covered < target:
            ids = torch.arange(n_walks, n_walks + batch)
            edges, walkers = self._walk(ids, gen)
            gained = int(torch.unique(edges[first[edges] == _NEVER]).numel())
            first.scatter_reduce_(0, edges, walkers, "amin")
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
                    pending.setdefault(idx, []).append((b_ids, b_units))
                    continue
                link = graph.links[idx]
                o = self.forward_step[idx].sample(b_units, gen)
                cell = _sample_cells(link, o, b_units, gen)
                edges.append(self.offsets[link.param] + link.flat_index(o, b_units, cell))
                walkers.append(b_ids)
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
                # Pick an operand in proportion to its forward path mass.
                branch = self.join[g].sample(units, gen)
                for b, operand in enumerate(group.operands):
                    sel = branch == b
                    if bool(sel.any()):
                        pending.setdefault(operand, []).append((ids[sel], units[sel]))
                continue
            link = graph.links[group.link]
            c = self.backward_step[group.link].sample(units, gen)
            cell = _sample_cells(link, units, c, gen)
            edges.append(self.offsets[link.param] + link.flat_index(units, c, cell))
            walkers.append(ids)
            pending.setdefault(link.src, []).append((ids, c))


# -- shared helpers -----------------------------------------------------------------------------------------------


def _check_args(
    model: nn.Module, density: float, input_shape: Sequence[int], seed: int
) -> tuple[float, tuple[int, ...], torch.Generator]:
    """Validate the common arguments; return the density as a float, the shape as a tuple and a seeded generator."""
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0.0 < float(density) <= 1.0:
        raise PwmprError(f"density must be a number in (0, 1], got {density!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**63:
        raise PwmprError(f"seed must be a non-negative integer, got {seed!r}")
    shape = normalize_input_shape(input_shape)
    # check_input_shape restores only the top-level flag; keep mixed train/eval states as they were.
    with training_mode(model, model.training):
        check_input_shape(model, shape)
    return float(density), shape, torch.Generator().manual_seed(int(seed))


def _n_target(density: float, total: int) -> int:
    """Number of weights a density keeps: ``round(density * total)``, at least 1."""
    return min(total, max(1, round(density * total)))


def _top(scores: Tensor, k: int) -> Tensor:
    """Bool mask of the ``k`` largest scores (exactly ``k``)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.topk(scores, k, sorted=False).indices] = True
    return keep


def _split(keep: Tensor, names: list[str], params: dict[str, Tensor]) -> MaskSet:
    """Cut a flat bool vector over the prunable weights (in ``names`` order) into per-layer masks."""
    return MaskSet({n: m.to(params[n].device) for n, m in split_layers(keep, params, names).items()})
