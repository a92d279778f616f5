"""Prune-and-regrow ("rewiring") steps of PWMPR's hybrid growth and shrink and of the RigL / SET baselines.

One step (docs/method.md, Prune and regrow) drops the smallest-|w| edges of each unit, then regrows by a growth
rule among the edges absent after the drop. An edge dropped and regrown keeps its weight and momentum; removed
edges are zeroed by the trainer, added ones (``Decision.added``) start at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pwmpr.counting import schedule_factor
from pwmpr.errors import PwmprError
from pwmpr.growth import GROWTH_RULES, SCOPES, top_n
from pwmpr.masks import MaskSet


def cosine_decay(value: float, t: float, horizon: float) -> float:
    """RigL's ``f_decay``: ``value/2 * (1 + cos(pi t/horizon))`` before ``horizon``, then 0 (horizon <= 0: no decay)."""
    return value if horizon <= 0 else value * schedule_factor("cosine", t / horizon)


@torch.no_grad()
def drop_lowest(model: nn.Module, masks: MaskSet, count: int) -> MaskSet:
    """Drop the ``count`` present edges of smallest |w| over all layers of ``masks`` (ties in position order).

    Returns:
        A new MaskSet over the same layers, each mask on its original device.
    """
    params = dict(model.named_parameters())
    names = list(masks)
    kept = [masks[n].reshape(-1).cpu() for n in names]
    if count <= 0 or not names:
        return MaskSet({n: masks[n].clone() for n in names})
    mags = [params[n].detach().abs().reshape(-1).cpu().double() for n in names]
    values = torch.cat([m[k] for m, k in zip(mags, kept, strict=True)])
    order = torch.sort(values, stable=True).indices[: min(count, values.numel())]
    drop = torch.zeros(values.numel(), dtype=torch.bool)
    drop[order] = True
    out: dict[str, Tensor] = {}
    start = 0
    for name, k in zip(names, kept, strict=True):
        n_kept = int(k.sum())
        new = k.clone()
        idx = k.nonzero().squeeze(1)
        new[idx[drop[start:start + n_kept]]] = False
        start += n_kept
        out[name] = new.view_as(masks[name]).to(masks[name].device)
    return MaskSet(out)


def pick_absent(masks: MaskSet, scores: Mapping[str, Tensor] | None, count: int, *, rule: str,
                generator: torch.Generator | None, fill: bool = False) -> dict[str, Tensor]:
    """Flat indices, per layer, of ``count`` absent edges picked by growth rule ``rule`` over all layers at once.

    Fewer may come back when fewer are eligible, unless ``fill`` tops the pick up to ``min(count, absent)`` by
    largest finite score (ties by position). ``scores`` may be None for rules that ignore them.
    """
    selector = GROWTH_RULES.get(rule)
    names = list(masks)
    if selector.uses_scores:
        if scores is None or any(n not in scores for n in names):
            raise PwmprError(f"growth rule {rule!r} needs a score for every layer")
        device = scores[names[0]].device
    else:
        device = masks[names[0]].device
    candidates = torch.cat([~masks[n].reshape(-1).to(device) for n in names])
    flat = torch.cat([scores[n].detach().reshape(-1).to(device) for n in names]) if selector.uses_scores else None
    if count > 0:
        chosen = selector(candidates, flat, count, generator)
        if fill and chosen.numel() < count:
            rest = candidates.clone()
            rest[chosen] = False
            pool = torch.nonzero(rest).squeeze(1)
            keys = torch.zeros(pool.numel(), dtype=torch.float64, device=device) if flat is None else \
                flat[pool].to(torch.float64)
            keys[~torch.isfinite(keys)] = -math.inf
            chosen = torch.cat([chosen, pool[top_n(keys, count - chosen.numel())]])
        chosen = torch.sort(chosen).values
    else:
        chosen = torch.empty(0, dtype=torch.long, device=device)
    bounds = torch.tensor([0] + [masks[n].numel() for n in names], device=chosen.device).cumsum(0)
    out = {}
    for i, name in enumerate(names):
        lo, hi = torch.searchsorted(chosen, bounds[i: i + 2]).tolist()
        out[name] = (chosen[lo:hi] - bounds[i]).to(masks[name].device)
    return out


@dataclass
class Rewired:
    """What one prune-and-regrow step did.

    Attributes:
        added: per layer, the sorted flat indices of edges absent before and present now (``Decision.added``).
        n_dropped: edges dropped by magnitude.
        n_grown: edges the growth rule picked (dropped ones picked again included).
        n_removed: edges present before and absent now.
    """

    masks: MaskSet
    added: dict[str, Tensor]
    n_dropped: int
    n_grown: int
    n_removed: int

    @property
    def n_added(self) -> int:
        """Edges absent before and present now."""
        return sum(int(v.numel()) for v in self.added.values())

    def info(self) -> dict[str, int]:
        """The counts, for a history row."""
        return {"n_dropped": self.n_dropped, "n_grown": self.n_grown, "n_removed": self.n_removed,
                "n_added": self.n_added}


@torch.no_grad()
def rewire(model: nn.Module, masks: MaskSet, counts: Callable[[int], tuple[int, int]], *, rule: str,
           generator: torch.Generator | None, scores: Callable[[MaskSet], Mapping[str, Tensor] | None],
           scope: str = "global", fill: bool = False) -> Rewired:
    """Drop by magnitude, then regrow by ``rule``, in every unit of layers (docs/method.md, Prune and regrow).

    Args:
        counts: ``counts(n_present_in_unit) -> (n_drop, n_grow)``.
        scores: ``scores(masks_after_drop) -> {name: score tensor}``, called once, only when ``rule`` uses scores.
        scope: ``global`` (one unit of all layers) or ``layer`` (each layer its own unit).
        fill: regrow exactly ``n_grow`` edges per unit, zero scores included (RigL, SET keep their density).
    """
    if scope not in SCOPES:
        raise PwmprError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    masks = masks if isinstance(masks, MaskSet) else MaskSet(masks)
    units = [list(masks)] if scope == "global" else [[n] for n in masks]
    dropped: dict[str, Tensor] = {}
    plan: list[tuple[list[str], int]] = []
    n_dropped = 0
    for unit in units:
        sub = MaskSet({n: masks[n] for n in unit})
        n_drop, n_grow = counts(sub.n_nonzero())
        after = drop_lowest(model, sub, n_drop)
        n_dropped += sub.n_nonzero() - after.n_nonzero()
        dropped.update(after)
        plan.append((unit, n_grow))
    pruned = MaskSet({n: dropped[n] for n in masks})
    score_map = scores(pruned) if GROWTH_RULES.get(rule).uses_scores else None
    new = {n: pruned[n].clone() for n in masks}
    n_grown = 0
    for unit, n_grow in plan:
        picked = pick_absent(MaskSet({n: pruned[n] for n in unit}), score_map, n_grow, rule=rule, generator=generator,
                             fill=fill)
        for name, idx in picked.items():
            flat = new[name].reshape(-1)
            flat[idx] = True
            n_grown += int(idx.numel())
    result = MaskSet(new)
    added = {n: torch.nonzero((result[n] & ~masks[n]).reshape(-1)).squeeze(1) for n in masks}
    n_removed = sum(int((masks[n] & ~result[n]).sum()) for n in masks)
    return Rewired(result, added, n_dropped, n_grown, n_removed)
