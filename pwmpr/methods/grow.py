"""PWMPR: grow from a PHEW seed by sampled PWMP scores until the stop rule says the accuracy has saturated.

Each phase: train, ask the stop sequence (``pwmpr.stop.sequence``), then score and grow ``gamma`` of the present
edges by the configured growth rule. Options: hybrid growth (``growth.zeta``) and the shrink stage
(``shrink.enabled``) (docs/method.md, "Prune and regrow" and "Shrink"). The stage of a run follows from its
history alone, so a resumed run decides as an uninterrupted one.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

from torch import Tensor

from pwmpr.cost import guard_reach, projected_cost, training_flops
from pwmpr.counting import round_half_up
from pwmpr.errors import PwmprError
from pwmpr.growth import GROWTH_RULES, grow, growth_count, recruit_values
from pwmpr.masks import MaskSet
from pwmpr.methods import METHODS, Decision, Method, RunContext
from pwmpr.methods.final_init import FINAL_INITS
from pwmpr.methods.rewire import Rewired, cosine_decay, rewire
from pwmpr.seed import SEEDS
from pwmpr.stop import STOP_RULES, Observation
from pwmpr.stop.sequence import growth_stop, observed, stop_points

#: ``Decision.reason`` of a shrink step and of the step back to the last network that kept its accuracy.
SHRINK, REVERT = "shrink", "shrink-revert"
_MASK, _STATE = "accepted_mask/", "accepted_state/"


def shrink_verdict(reference: Observation, candidate: Observation, tol: float, alpha: float) -> dict[str, Any]:
    """Does ``candidate`` keep the accuracy of ``reference``, within ``tol``? (docs/method.md, Shrink)

    The candidate fails when the loss ``D = a_ref - a_cand`` exceeds ``tol + z_(1 - alpha) se`` (binomial ``se``,
    0 without validation sizes). Returns ``{"kept", "loss", "se", "bound"}`` (``bound``: the largest loss accepted).
    """
    se_ref, se_cand = reference.stderr or 0.0, candidate.stderr or 0.0
    se = math.sqrt(se_ref ** 2 + se_cand ** 2)
    bound = tol + NormalDist().inv_cdf(1.0 - alpha) * se
    loss = reference.accuracy - candidate.accuracy
    return {"kept": bool(loss <= bound + 1e-12), "loss": loss, "se": se, "bound": bound}


def cost_guard(ctx: RunContext, grown: MaskSet, next_epochs: int) -> dict[str, Any] | None:
    """Projected cost (dense runs; docs/method.md, Cost) of the next phase and final training at the grown density.

    ``over`` says it passes ``--max-cost`` (docs/method.md, "Cost guard"); ``reach``, where it falls short of
    ``--max-density``, is the density the guard would stop growth at if every later step grew by ``gamma``
    (``guard_reach``). None without a guard (``--max-cost 0``) or when the last row has no cost record.
    """
    limit, row = ctx.cfg.stop.max_cost, ctx.history[-1]
    if not limit or not row.get("cost_flops") or not row.get("fwd_flops_sparse") or not row.get("epochs"):
        return None
    fwd = float(training_flops(ctx.model, grown, ctx.input_shape).sparse)
    after_phase = projected_cost(row, sparse_fwd=fwd, epochs=next_epochs)
    total = projected_cost(row, sparse_fwd=fwd, epochs=next_epochs + ctx.cfg.final_epochs)
    cap = ctx.cfg.stop.max_density
    reach = guard_reach(row, gamma=ctx.cfg.growth.gamma, phase_epochs=next_epochs,
                        final_epochs=ctx.cfg.final_epochs, limit=limit, max_density=cap)
    return {"limit": limit, "so_far": row["cost_flops"], "after_next_phase": after_phase, "projected": total,
            "over": bool(total > limit), **({"reach": reach} if reach < cap - 1e-12 else {})}


@METHODS.register("pwmpr")
class GrowMethod(Method):
    """Seed, rough-train, score, grow, stop; then a final training at the discovered density."""

    name = "pwmpr"
    has_final = True
    stops_growth = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        # Unknown names fail here, before any training, not after the first phase.
        GROWTH_RULES.get(cfg.growth.rule)
        SEEDS.get(cfg.growth.seed_method)
        FINAL_INITS.get(cfg.final_init)
        self.stop_rule = STOP_RULES.get(cfg.stop.rule)

    def initial_masks(self, model, input_shape):
        g = self.cfg.growth
        return SEEDS.get(g.seed_method)(model, g.seed_density, input_shape, self.cfg.seed)

    def phase_warmup(self, phase: int) -> float:
        """``--warmup-epochs`` in every phase after the first, which starts from the previous phase's weights (the
        first starts from the model's initial ones, as a sweep's training does)."""
        return self.cfg.train.warmup_epochs if phase > 0 else 0.0

    def after_phase(self, ctx: RunContext) -> Decision:
        stage = self._stage(ctx.history)
        if stage == SHRINK:
            return self._after_shrink_step(ctx)
        if stage == REVERT:  # the network gone back to has had its phase: the shrink stage is over
            return self._ends(ctx.history, Decision(stop=True, reason="shrink-tol", info={"shrink": {"revert": True}}))
        return self._after_growth_phase(ctx)

    # -- growth ---------------------------------------------------------------------------------
    def zeta_at(self, step: int) -> float:
        """The prune-and-regrow fraction of growth step ``step`` (0: the step after the first phase)."""
        g = self.cfg.growth
        if g.zeta <= 0 or step < g.zeta_start:
            return 0.0
        return cosine_decay(g.zeta, step - g.zeta_start, g.zeta_steps)

    def _after_growth_phase(self, ctx: RunContext) -> Decision:
        cfg, g = self.cfg, self.cfg.growth
        density = ctx.masks.density()
        verdict = growth_stop(ctx.history, cfg.stop, ctx.num_classes, density)
        info = verdict.info
        if verdict.reason is not None:
            return self._growth_stops(ctx, verdict.reason, info)
        points = stop_points(ctx.history)
        # Never grow past max_density: shrink the last step's gamma to land on it.
        gamma = min(g.gamma, (cfg.stop.max_density - density) / max(density, 1e-12))
        if growth_count(ctx.masks.n_nonzero(), gamma) == 0:  # within one edge of max_density
            return self._growth_stops(ctx, "max-density", info)
        rule = GROWTH_RULES.get(g.rule)
        zeta = self.zeta_at(len(points) - 1)
        values = None  # start values of recruited edges (pwmp-explore), which do not start at zero
        if zeta > 0:
            # Hybrid: drop zeta of the edges by |w|, regrow them plus the gamma growth, scored on the pruned net.
            step = rewire(ctx.model, ctx.masks, lambda n: _hybrid_counts(n, zeta, gamma), rule=g.rule,
                          generator=ctx.generator, scope=g.scope,
                          scores=lambda pruned: rule.scores(ctx.model, pruned, ctx.input_shape, ctx.sample_batch))
            masks, added = step.masks, step.added
            info["prune_regrow"] = {"zeta": zeta, **step.info()}
            grown = masks.n_nonzero() - ctx.masks.n_nonzero()
        else:
            # The rule says what it scores by (PWMP, |dL/dw| on a real batch, attention-aware scores, nothing).
            scores = rule.scores(ctx.model, ctx.masks, ctx.input_shape, ctx.sample_batch)
            masks, added = grow(ctx.masks, scores, gamma, rule=g.rule, generator=ctx.generator, scope=g.scope)
            grown = sum(int(v.numel()) for v in added.values())
            if rule.recruits:
                values = recruit_values(ctx.model, ctx.masks, scores, added, ctx.generator)
                info["n_recruits"] = sum(int((v != 0).sum()) for v in values.values())
        info["n_added"] = sum(int(v.numel()) for v in added.values())
        if grown <= 0:
            return self._growth_stops(ctx, "no-growth-candidates", info)
        guard = cost_guard(ctx, masks, self.phase_epochs(len(ctx.history)))
        if guard is not None:
            info["cost_guard"] = guard
            if guard["over"]:
                for key in ("n_added", "n_recruits", "prune_regrow"):  # the step is not taken
                    info.pop(key, None)
                return self._growth_stops(ctx, "max-cost", info)
        return Decision(masks=masks, added=added, values=values, info=info)

    def _growth_stops(self, ctx: RunContext, reason: str, info: dict[str, Any]) -> Decision:
        """Growth has stopped for ``reason``: stop the run, or start the shrink stage from this network."""
        if not self.cfg.shrink.enabled:
            return Decision(stop=True, reason=reason, info=info)
        info["growth_stop"] = reason
        self._accept(ctx)
        return self._next_shrink_step(ctx, info, step=1)

    # -- shrink ---------------------------------------------------------------------------------
    @staticmethod
    def _stage(history: list[dict]) -> str:
        """``shrink`` when the phase just recorded trained a shrink candidate, ``shrink-revert`` when it was the
        network gone back to, else ``grow``: what the decision after the previous phase said."""
        previous = history[-2].get("decision") if len(history) >= 2 else None
        return previous if previous in (SHRINK, REVERT) else "grow"

    @staticmethod
    def _knee(history: list[dict]) -> dict | None:
        """The history row where growth stopped (the discovered network), None before that."""
        return next((r for r in reversed(history) if r.get("growth_stop")), None)

    def _accept(self, ctx: RunContext) -> None:
        """Keep the network just trained (masks and the whole state) as the one to go back to."""
        self._accepted = (ctx.masks.to("cpu").clone(),
                          {k: v.detach().to("cpu", copy=True) for k, v in ctx.model.state_dict().items()})

    def _next_shrink_step(self, ctx: RunContext, info: dict[str, Any], step: int) -> Decision:
        """Prune ``shrink.fraction`` by magnitude and regrow ``shrink.regrow`` by the growth rule, or stop."""
        s, g = self.cfg.shrink, self.cfg.growth
        n = ctx.masks.n_nonzero()
        if step > s.max_steps:
            return self._ends(ctx.history, Decision(stop=True, reason="shrink-max-steps", info=info))
        if round_half_up(s.fraction * n) - round_half_up(s.regrow * n) <= 0 or n <= 1:
            return self._ends(ctx.history, Decision(stop=True, reason="shrink-nothing-left", info=info))
        rule = GROWTH_RULES.get(g.rule)
        rw: Rewired = rewire(
            ctx.model, ctx.masks, lambda m: (round_half_up(s.fraction * m), round_half_up(s.regrow * m)),
            rule=g.rule, generator=ctx.generator, scope=g.scope,
            scores=lambda pruned: rule.scores(ctx.model, pruned, ctx.input_shape, ctx.sample_batch))
        if rw.masks.n_nonzero() >= n:
            # The global count above can promise a net removal that per-layer rounding (--scope layer) undoes:
            # a candidate at the same density would only retrain the accepted network until --shrink-max-steps.
            return self._ends(ctx.history, Decision(stop=True, reason="shrink-nothing-left", info=info))
        info["shrink_next"] = {"step": step, **rw.info()}
        return Decision(masks=rw.masks, added=rw.added, reason=SHRINK, info=info)

    def _after_shrink_step(self, ctx: RunContext) -> Decision:
        knee = self._knee(ctx.history)
        row = ctx.history[-1]
        step = len(_shrink_steps(ctx.history)) + 1  # this row gets its entry below
        verdict = shrink_verdict(observed(knee), observed(row), self.cfg.shrink.tol, self.cfg.shrink.alpha)
        info: dict[str, Any] = {"shrink": {"step": step, **verdict}}
        if verdict["kept"]:
            self._accept(ctx)
            return self._next_shrink_step(ctx, info, step + 1)
        if getattr(self, "_accepted", None) is None:
            raise PwmprError(f"the shrink stage has no network to go back to: its checkpoint lacks the "
                             f"method/{_MASK}* and method/{_STATE}* tensors; rerun from the start")
        masks, state = self._accepted
        return Decision(masks=masks.clone(), rewind=state, reset_optimizer=True, reason=REVERT, info=info)

    def _ends(self, history: list[dict], decision: Decision) -> Decision:
        """``decision`` with both ends of the run in its row: the knee growth found and the smallest density kept."""
        rows = [*history[:-1], {**history[-1], **decision.info}]  # the row as it will be recorded
        decision.info.update(self._both_ends(rows))
        self._accepted = None
        return decision

    @staticmethod
    def _smallest(history: list[dict]) -> dict | None:
        """The last row of the shrink stage whose network kept the accuracy (the knee when none did)."""
        kept = [r for r in _shrink_steps(history) if r["shrink"]["kept"]]
        return kept[-1] if kept else GrowMethod._knee(history)

    def _both_ends(self, history: list[dict]) -> dict[str, Any]:
        knee, smallest = self._knee(history), self._smallest(history)
        if knee is None:
            return {}
        return {"knee_density": knee["density"], "knee_val_acc": knee["val_acc"],
                "smallest_density": smallest["density"], "smallest_val_acc": smallest["val_acc"]}

    # -- resume and summary ---------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        """The network the shrink stage would go back to (none outside the shrink stage)."""
        accepted = getattr(self, "_accepted", None)
        if accepted is None:
            return {}
        masks, state = accepted
        # Copies: the masks gone back to are the trainer's too, and a checkpoint cannot hold one tensor twice.
        return {**{_MASK + k: v.clone() for k, v in masks.to_dict().items()},
                **{_STATE + k: v.clone() for k, v in state.items()}}

    def restore(self, tensors: dict[str, Tensor], history: list[dict[str, Any]]) -> None:
        """Take back the network to go back to from a checkpoint."""
        masks = {k[len(_MASK):]: v for k, v in tensors.items() if k.startswith(_MASK)}
        state = {k[len(_STATE):]: v for k, v in tensors.items() if k.startswith(_STATE)}
        self._accepted = (MaskSet(masks), state) if masks else None

    def summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """With the shrink stage: both ends (knee and smallest density kept), the growth's and the shrink's stop."""
        knee = self._knee(history)
        if knee is None:
            return {}
        steps = _shrink_steps(history)
        return {**self._both_ends(history), "growth_stop_reason": knee["growth_stop"],
                "shrink_steps": len(steps), "shrink_kept": sum(1 for r in steps if r["shrink"]["kept"])}


def _shrink_steps(history: list[dict]) -> list[dict]:
    """The rows of the shrink stage that trained a candidate (each with its verdict)."""
    return [r for r in history if "kept" in r.get("shrink", {})]


def _hybrid_counts(n: int, zeta: float, gamma: float) -> tuple[int, int]:
    """Hybrid growth of a unit with ``n`` edges: drop ``round(zeta n)``, regrow those plus ``round(gamma n)``."""
    dropped = round_half_up(zeta * n)
    return dropped, dropped + growth_count(n, gamma)
