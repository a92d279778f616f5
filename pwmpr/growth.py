"""Grow: add edges to a MaskSet, picked by a rule of ``GROWTH_RULES`` (docs/method.md, Grow).

Rules: ``pwmp`` (Gumbel-top-k draw proportional to the score), ``pwmp-topk``, ``gradient`` (RigL's ``|dL/dw|``),
``random``, ``pwmp-explore`` (docs/method.md, "Recruiting units") and the attention rules ``pwmp-attn``,
``pwmp-qk-gradient``, ``pwmp-qk-head``, ``pwmp-qk-random`` (docs/method.md, "Attention: growing q and k").
The budget is ``round(gamma * nnz)``, global or per layer (``scope``). Edges are only ever added.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pwmpr.attention import attention_pwmp_scores, has_attention, qk_groups, qk_scores
from pwmpr.counting import round_half_up
from pwmpr.errors import PwmprError
from pwmpr.gradient_score import gradient_scores
from pwmpr.graph import build_unit_graph
from pwmpr.losses import cross_entropy
from pwmpr.masks import MaskSet, split_positions
from pwmpr.probe import normalize_input_shape
from pwmpr.registry import Registry
from pwmpr.score import pwmp_scores

log = logging.getLogger(__name__)

SCOPES = ("global", "layer")

# select(candidates, scores, n_add, generator) -> flat indices into ``candidates`` (1-D long tensor).
#   candidates: 1-D bool tensor, True for an absent edge that may be added.
#   scores: 1-D float tensor of the same length, or None for rules that ignore scores.
SelectFn = Callable[[Tensor, "Tensor | None", int, "torch.Generator | None"], Tensor]
# score(model, masks, input_shape, sample_batch) -> {weight name: scores} for every masked weight.
#   sample_batch: a callable returning one real (x, y) training batch on the model's device (drawn only by the
#   rules that need one), or None where there is none.
ScoreFn = Callable[[nn.Module, MaskSet, Sequence[int], "Callable[[], tuple[Tensor, Tensor]] | None"],
                   dict[str, Tensor]]


@dataclass(frozen=True)
class GrowthRule:
    """A registered growth rule: how to score the edges and how to pick ``n_add`` of the absent ones.

    Attributes:
        select: picks fewer than ``n_add`` edges only when fewer candidates are eligible.
        uses_scores: False for rules that ignore the scores (``grow`` then accepts ``scores=None``).
        score: how the scores are computed; None when unused.
        recruits: the rule grows zero-score edges, which start at ``recruit_values`` instead of zero.
    """

    name: str
    select: SelectFn
    uses_scores: bool = True
    score: ScoreFn | None = None
    recruits: bool = False

    def __call__(self, candidates: Tensor, scores: Tensor | None, n_add: int, generator=None) -> Tensor:
        return self.select(candidates, scores, n_add, generator)

    def scores(self, model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int],
               sample_batch: Callable[[], tuple[Tensor, Tensor]] | None = None) -> dict[str, Tensor] | None:
        """The scores this rule grows by, for ``grow(masks, rule.scores(...), rule=rule.name)``; None if unused.

        ``sample_batch`` returns one real ``(x, y)`` batch; only rules that score on data call it.
        """
        if not self.uses_scores or self.score is None:
            return None
        masks = masks if isinstance(masks, MaskSet) else MaskSet(masks)
        return self.score(model, masks, input_shape, sample_batch)


GROWTH_RULES: Registry[GrowthRule] = Registry("growth rule")


def _growth_rule(name: str, *, uses_scores: bool = True, score: ScoreFn | None = None, recruits: bool = False
                 ) -> Callable[[SelectFn], GrowthRule]:
    """Decorator registering a selection function as the growth rule ``name``: the one place a rule is added."""

    def deco(fn: SelectFn) -> GrowthRule:
        rule = GrowthRule(name=name, select=fn, uses_scores=uses_scores, score=score, recruits=recruits)
        GROWTH_RULES.register(name)(rule)
        return rule

    return deco


# -- how the rules score ------------------------------------------------------------------------------


def _batch(sample_batch: Callable[[], tuple[Tensor, Tensor]] | None, rule: str) -> tuple[Tensor, Tensor]:
    if sample_batch is None:
        raise PwmprError(f"growth rule {rule!r} scores on a real batch, but no sample_batch was given")
    return sample_batch()


def _score_pwmp(model, masks, input_shape, sample_batch=None):
    return pwmp_scores(model, masks, input_shape)


def _score_explore(model, masks, input_shape, sample_batch=None):
    # PWMP's scores, with the query and key entries of every attention set apart (NaN: never drawn): PWMP scores
    # them 0 by construction (uniform attention), not because their units have no path, so they are not recruits.
    # So are the weights whose outputs never lead to the class scores (an auxiliary head's): no recruit revives them.
    scores = pwmp_scores(model, masks, input_shape)
    graph = build_unit_graph(model, normalize_input_shape(input_shape))
    for name in set(scores) - set(graph.params_to_output()):
        scores[name] = torch.full_like(scores[name], math.nan)
    for group in qk_groups(model, masks, input_shape, graph):
        for name, entries in group.qk.items():
            scores[name] = scores[name].masked_fill(entries.to(scores[name].device), math.nan)
    return scores


def _score_gradient(model, masks, input_shape, sample_batch=None):
    return gradient_scores(model, masks, _batch(sample_batch, "gradient"), cross_entropy)


def _score_attention(model, masks, input_shape, sample_batch=None):
    # A model without attention needs no batch: the scores are pwmp's.
    batch = _batch(sample_batch, "pwmp-attn") if has_attention(model, input_shape) else None
    return attention_pwmp_scores(model, masks, input_shape, batch)


def _score_qk(kind: str) -> ScoreFn:
    def score(model, masks, input_shape, sample_batch=None):
        needs_batch = kind != "random" and has_attention(model, input_shape)
        batch = _batch(sample_batch, f"pwmp-qk-{kind}") if needs_batch else None
        return qk_scores(model, masks, input_shape, batch, kind)

    return score


# -- helpers ------------------------------------------------------------------------------------


def growth_count(n_nonzero: int, gamma: float) -> int:
    """Edges one growth step adds to ``n_nonzero`` kept edges: ``round(gamma * n_nonzero)``, halves rounded up."""
    return round_half_up(gamma * n_nonzero)


def _eligible_by_score(candidates: Tensor, scores: Tensor | None) -> Tensor:
    """Candidates whose score is finite and strictly positive: a zero score (an edge touching a dead unit,
    docs/method.md, Grow) has probability 0, and negative or non-finite scores have no meaning as sampling weights."""
    if scores is None:
        raise PwmprError("this growth rule needs scores, got None")
    return candidates & (scores > 0) & (scores < math.inf)


def _noise_like(n: int, like: Tensor, generator: torch.Generator | None, kind: str) -> Tensor:
    """``n`` float64 draws (``"gumbel"`` or ``"uniform"``) made on ``like.device``, reproducible from ``generator``."""
    if generator is not None and generator.device.type != like.device.type:
        generator = _generator_on(like.device, int(torch.randint(0, 2**62, (1,), generator=generator)))
    noise = torch.rand(n, dtype=torch.float64, device=like.device, generator=generator)
    if kind == "gumbel":
        # Gumbel(0, 1) = -log(-log(U)), U uniform on [0, 1) (three times faster than exponential_ on the CPU); U = 0
        # gives -inf, a key that is never picked while a finite one is left.
        noise = noise.log_().neg_().log_().neg_()
    return noise


def _generator_on(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


_SAMPLE = 1 << 20  # keys read to bound the n-th largest from below before the exact search


def top_n(keys: Tensor, n: int) -> Tensor:
    """Positions of the ``n`` largest ``keys``, ties broken by the lower position (deterministic, unlike topk)."""
    if n <= 0:
        return torch.empty(0, dtype=torch.long, device=keys.device)
    if n >= keys.numel():
        return torch.arange(keys.numel(), device=keys.device)
    m = keys.numel()
    if m > 8 * _SAMPLE and n < m // 4:
        sample = keys[:: m // _SAMPLE]
        share = n / m
        # A rank with a margin of 6 standard deviations of the sampled count above the expected n-th largest.
        rank = min(sample.numel(), int(sample.numel() * share * 1.05 + 6 * math.sqrt(sample.numel() * share)) + 64)
        low = torch.topk(sample, rank, sorted=False).values.min()
        above = torch.nonzero(keys >= low).squeeze(1)
        if above.numel() >= n:
            return above[_top_n_exact(keys[above], n)]
    return _top_n_exact(keys, n)


def _top_n_exact(keys: Tensor, n: int) -> Tensor:
    """``top_n`` by one ``topk`` for the threshold, then two scans."""
    threshold = torch.topk(keys, n, sorted=False).values.min()
    above = torch.nonzero(keys > threshold).squeeze(1)
    # nonzero lists positions in increasing order, so the lowest-positioned ties win.
    ties = torch.nonzero(keys == threshold).squeeze(1)[: n - above.numel()]
    return torch.cat([above, ties])


# -- the rules ----------------------------------------------------------------------------------


@_growth_rule("pwmp", score=_score_pwmp)
def _select_pwmp(candidates: Tensor, scores: Tensor | None, n_add: int, generator=None) -> Tensor:
    """Sample ``n_add`` edges with probability proportional to score, without replacement (Gumbel-top-k)."""
    eligible = _eligible_by_score(candidates, scores)
    # log in float64: PWMP scores span hundreds of decades on deep nets, the keys must not.
    keys = scores.to(torch.float64).log()
    keys.add_(_noise_like(keys.numel(), scores, generator, "gumbel").clamp_(min=torch.finfo(torch.float64).min))
    keys.masked_fill_(~eligible, -math.inf)
    return top_n(keys, min(n_add, int(eligible.sum())))


@_growth_rule("pwmp-topk", score=_score_pwmp)
def _select_topk(candidates: Tensor, scores: Tensor | None, n_add: int, generator=None) -> Tensor:
    """The ``n_add`` highest-score edges; equal scores go to the lower flat index."""
    eligible = _eligible_by_score(candidates, scores)
    keys = scores.masked_fill(~eligible, -math.inf)
    return top_n(keys, min(n_add, int(eligible.sum())))


@_growth_rule("gradient", score=_score_gradient)
def _select_gradient(candidates: Tensor, scores: Tensor | None, n_add: int, generator=None) -> Tensor:
    """RigL's growth: the ``n_add`` absent edges of largest ``|dL/dw|`` (the pwmp-topk selection on gradient scores)."""
    return _select_topk(candidates, scores, n_add, generator)


@_growth_rule("random", uses_scores=False)
def _select_random(candidates: Tensor, scores: Tensor | None, n_add: int, generator=None) -> Tensor:
    """``n_add`` absent edges drawn uniformly without replacement (scores ignored)."""
    pool = torch.nonzero(candidates).squeeze(1)
    return pool[top_n(_noise_like(pool.numel(), candidates, generator, "uniform"), n_add)]


#: Share of a ``pwmp-explore`` step drawn uniformly among the zero-score edges (docs/method.md, "Recruiting units").
EXPLORE_SHARE = 0.1


@_growth_rule("pwmp-explore", score=_score_explore, recruits=True)
def _select_explore(candidates: Tensor, scores: Tensor | None, n_add: int, generator=None) -> Tensor:
    """``pwmp``'s draw for most of the budget; ``EXPLORE_SHARE`` of it uniform over the absent zero-score edges."""
    eligible = _eligible_by_score(candidates, scores)
    unreached = candidates & (scores == 0)
    n_pos, n_zero = int(eligible.sum()), int(unreached.sum())
    n_explore = min(n_zero, max(n_add - n_pos, int(math.floor(EXPLORE_SHARE * n_add + 0.5))))
    exploit = _select_pwmp(candidates, scores, n_add - n_explore, generator)
    pool = torch.nonzero(unreached).squeeze(1)
    explore = pool[top_n(_noise_like(pool.numel(), candidates, generator, "uniform"), n_explore)]
    return torch.cat([exploit, explore])


@torch.no_grad()
def recruit_values(model: nn.Module, masks: MaskSet, scores: Mapping[str, Tensor], added: Mapping[str, Tensor],
                   generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Start values of the grown zero-score edges: the layer's mean kept |w| with a random sign, elsewhere 0.

    One tensor of the weight's shape per layer that has any (docs/method.md, "Recruiting units").
    """
    out = {}
    for name, idx in added.items():
        if idx.numel() == 0:
            continue
        flat_scores = scores[name].reshape(-1).to(idx.device)
        recruits = idx[flat_scores[idx] == 0].cpu()
        if recruits.numel() == 0:
            continue
        weight = model.get_parameter(name).detach()
        kept = masks[name].to(weight.device)
        size = float(weight.abs()[kept].mean()) if kept.any() else 1.0 / math.sqrt(weight[0].numel())
        signs = torch.randint(0, 2, (recruits.numel(),), generator=generator).to(weight.dtype) * 2 - 1
        values = torch.zeros(weight.numel(), dtype=weight.dtype)
        values[recruits] = size * signs
        out[name] = values.view(weight.shape)
    return out


# The attention-aware rules (docs/method.md, "Attention: growing q and k"): pwmp's draw on other scores.
for _name, _score in (("pwmp-attn", _score_attention), ("pwmp-qk-gradient", _score_qk("gradient")),
                      ("pwmp-qk-head", _score_qk("head")), ("pwmp-qk-random", _score_qk("random"))):
    GROWTH_RULES.register(_name)(GrowthRule(name=_name, select=_select_pwmp, score=_score))


# -- grow -----------------------------------------------------------------------------------------


def _check_gamma(gamma: float) -> float:
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise PwmprError(f"gamma must be a positive number (e.g. 0.25), got {gamma!r}") from None
    if not math.isfinite(g) or g <= 0:
        raise PwmprError(f"gamma must be a positive finite number (0.25 adds 25% of the kept edges), got {gamma!r}")
    return g


def _check_scores(masks: MaskSet, scores: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    if scores is None:
        raise PwmprError("this growth rule needs scores (name -> tensor of the weight's shape), got None")
    out = {}
    for name, mask in masks.items():
        if name not in scores:
            raise PwmprError(f"scores have no entry for layer {name!r}")
        s = scores[name]
        if not isinstance(s, Tensor):
            raise PwmprError(f"scores for layer {name!r} must be a tensor, got {type(s).__name__}")
        if tuple(s.shape) != tuple(mask.shape):
            raise PwmprError(f"scores for layer {name!r} have shape {tuple(s.shape)}, the mask has {tuple(mask.shape)}")
        out[name] = s.detach()
    return out


@torch.no_grad()
def grow(
    masks: Mapping[str, Tensor],
    scores: Mapping[str, Tensor] | None,
    gamma: float = 0.25,
    *,
    rule: str = "pwmp",
    generator: torch.Generator | None = None,
    scope: str = "global",
) -> tuple[MaskSet, dict[str, Tensor]]:
    """Add ``round(gamma * nnz)`` absent edges to ``masks``, picked by the growth rule ``rule`` (docs/method.md, Grow).

    Score-based rules pick only edges of finite score > 0 (``pwmp-explore`` also draws among zero scores); with
    fewer eligible edges than the budget all are added (logged at INFO).

    Args:
        masks: the current masks (a MaskSet or ``{name: bool tensor}``); not modified.
        scores: ``{name: tensor of the weight's shape}``, e.g. from ``GROWTH_RULES.get(rule).scores(...)``; extra
            names ignored; may be None for ``random``.
        gamma: growth factor > 0.
        generator: a seeded CPU ``torch.Generator``: same state and inputs give the same edges on any device.
            None uses torch's global RNG.
        scope: ``"global"`` (one budget, default) or ``"layer"`` (``round(gamma * nnz_layer)`` per layer).

    Returns:
        ``(new_masks, added)``: the grown MaskSet and, per layer, the sorted flat indices it gained (on the mask's
        device): zero these weights and their optimizer state.

    Raises:
        PwmprError: gamma not positive and finite, unknown rule or scope, scores missing a layer or misshapen.
    """
    gamma = _check_gamma(gamma)
    selector = GROWTH_RULES.get(rule)
    if scope not in SCOPES:
        raise PwmprError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    masks = masks if isinstance(masks, MaskSet) else MaskSet(masks)
    score_map = _check_scores(masks, scores) if selector.uses_scores else {}
    names = list(masks)

    # Sample on the scores' device (the masks' when scores are unused).
    def flat_inputs(name: str, device: torch.device) -> tuple[Tensor, Tensor | None]:
        candidates = ~masks[name].reshape(-1).to(device)
        s = score_map.get(name)
        return candidates, (None if s is None else s.reshape(-1).to(device))

    work_device = next(iter(score_map.values())).device if score_map else None
    picked: dict[str, Tensor] = {}
    if scope == "global":
        n_add = growth_count(masks.n_nonzero(), gamma)
        device = work_device or (masks[names[0]].device if names else torch.device("cpu"))
        parts = [flat_inputs(n, device) for n in names]
        candidates = torch.cat([c for c, _ in parts]) if parts else torch.empty(0, dtype=torch.bool)
        flat_scores = torch.cat([s for _, s in parts]) if selector.uses_scores and parts else None
        chosen = selector(candidates, flat_scores, n_add, generator) if n_add > 0 else candidates.new_empty(0).long()
        if chosen.numel() < n_add:
            log.info("grow: budget %d edges but only %d eligible; added all of them", n_add, chosen.numel())
        # Split the global positions back into layers.
        picked = dict(zip(names, split_positions(chosen, [masks[n].numel() for n in names]), strict=True))
    else:
        for name in names:
            n_add = growth_count(int(masks[name].sum()), gamma)
            device = work_device or masks[name].device
            candidates, flat_scores = flat_inputs(name, device)
            chosen = selector(candidates, flat_scores, n_add, generator) if n_add > 0 else None
            if chosen is None:
                chosen = torch.empty(0, dtype=torch.long, device=device)
            elif chosen.numel() < n_add:
                log.info("grow: layer %s budget %d edges but only %d eligible", name, n_add, chosen.numel())
            picked[name] = torch.sort(chosen).values

    # Build the new masks: a copy of each old mask with the picked positions set.
    new_masks: dict[str, Tensor] = {}
    added: dict[str, Tensor] = {}
    for name in names:
        old = masks[name]
        idx = picked[name].to(device=old.device, dtype=torch.long)
        flat = old.reshape(-1).clone()
        flat[idx] = True
        new_masks[name] = flat.view(old.shape)
        added[name] = idx
    return MaskSet(new_masks), added
