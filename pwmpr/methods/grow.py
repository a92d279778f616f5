"""PWMPR: grow from a PHEW seed by sampled PWMP scores until the accuracy-density fit saturates.

After each rough-training phase: refit the saturation curve (``pwmpr.stop``), stop when the density has
reached rho* in two consecutive refits, or (pwmpr's fallback, for seeds already past the knee) when doubling the
density no longer buys ``plateau_tol`` accuracy, or at max density / max phases; otherwise score the missing edges
(``pwmpr.score``) and grow by ``gamma`` (``pwmpr.grow``). The growth rule is a registry entry, so the
``random``, ``gradient`` and ``pwmp-topk`` ablations run through this same method.
"""

from __future__ import annotations

from pwmpr.grow import GROWTH_RULES, grow, growth_count
from pwmpr.methods import METHODS, Decision, Method, RunContext
from pwmpr.score import gradient_scores, pwmp_scores
from pwmpr.seed import SEEDS
from pwmpr.stop import plateau_reached, should_stop


@METHODS.register("pwmpr")
class GrowMethod(Method):
    """Seed, rough-train, score, grow, stop; then a final training at the discovered density."""

    name = "pwmpr"
    has_final = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        # Unknown names fail here, before any training, not after the first phase.
        GROWTH_RULES.get(cfg.growth.rule)
        SEEDS.get(cfg.growth.seed_method)

    def initial_masks(self, model, input_shape):
        g = self.cfg.growth
        return SEEDS.get(g.seed_method)(model, g.seed_density, input_shape, self.cfg.seed)

    def after_phase(self, ctx: RunContext) -> Decision:
        cfg, g = self.cfg, self.cfg.growth
        points = [(r["density"], r["val_acc"]) for r in ctx.history if r.get("stage") == "phase"]
        verdict = should_stop(points, min_points=cfg.stop.min_points, consecutive=cfg.stop.consecutive)
        info = {"fit": verdict.fit.to_dict() if verdict.fit is not None else None, "fit_status": verdict.reason}
        density = ctx.masks.density()
        if verdict.stop:
            return Decision(stop=True, reason="saturated", info=info)
        flat = plateau_reached(points, tol=cfg.stop.plateau_tol, window=cfg.stop.min_points + 1,
                               consecutive=cfg.stop.consecutive)
        info["plateau_status"] = flat.reason
        if flat.stop:
            return Decision(stop=True, reason="plateau", info=info)
        if density >= cfg.stop.max_density - 1e-12:
            return Decision(stop=True, reason="max-density", info=info)
        if len(points) >= cfg.stop.max_phases:
            return Decision(stop=True, reason="max-phases", info=info)
        # Never grow past max_density: shrink the last step's gamma to land on it.
        gamma = min(g.gamma, (cfg.stop.max_density - density) / max(density, 1e-12))
        if growth_count(ctx.masks.n_nonzero(), gamma) == 0:  # within one edge of max_density
            return Decision(stop=True, reason="max-density", info=info)
        if g.rule == "random":
            scores = None
        elif g.rule == "gradient":
            scores = gradient_scores(ctx.model, ctx.masks, ctx.sample_batch())
        else:
            scores = pwmp_scores(ctx.model, ctx.masks, ctx.input_shape)
        masks, added = grow(ctx.masks, scores, gamma, rule=g.rule, generator=ctx.generator, scope=g.scope)
        n_added = sum(int(v.numel()) for v in added.values())
        info["n_added"] = n_added
        if n_added == 0:
            return Decision(stop=True, reason="no-growth-candidates", info=info)
        return Decision(masks=masks, added=added, info=info)
