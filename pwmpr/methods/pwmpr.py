"""PWMPR: grow from a PHEW seed by sampled PWMP scores until the stop rule says the accuracy has saturated.

After each rough-training phase the configured stop rule (``pwmpr.stop.STOP_RULES``: by default the gain rule)
reads the (density, validation accuracy) points; growth also stops when doubling the density no longer buys
``plateau_tol`` accuracy (a fallback, 0 disables it), at max density, at max phases, or when no edge can be grown.
Otherwise the missing edges are scored (``pwmpr.score``) and ``gamma`` of the present edge count is grown
(``pwmpr.growth``). The growth rule is a registry entry, so the ``random``, ``gradient`` and ``pwmp-topk``
ablations run through this same method.
"""

from __future__ import annotations

from pwmpr.growth import GROWTH_RULES, grow, growth_count
from pwmpr.methods import METHODS, Decision, Method, RunContext
from pwmpr.score import gradient_scores, pwmp_scores
from pwmpr.seed import SEEDS
from pwmpr.stop import STOP_RULES, Observation, StopContext, plateau_reached


def stop_points(history: list[dict]) -> list[Observation]:
    """The (density, validation accuracy, validation size) points of the growth phases of a run's history."""
    return [Observation(r["density"], r["val_acc"], r.get("val_n")) for r in history if r.get("stage") == "phase"]


def stop_context(cfg, num_classes: int | None) -> StopContext:
    """The StopContext of a run's config."""
    s = cfg.stop
    return StopContext(chance=1.0 / num_classes if num_classes else 0.0, cap=s.max_density, min_points=s.min_points,
                       consecutive=s.consecutive, tol=s.tol, alpha=s.alpha)


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
        self.stop_rule = STOP_RULES.get(cfg.stop.rule)

    def initial_masks(self, model, input_shape):
        g = self.cfg.growth
        return SEEDS.get(g.seed_method)(model, g.seed_density, input_shape, self.cfg.seed)

    def after_phase(self, ctx: RunContext) -> Decision:
        cfg, g = self.cfg, self.cfg.growth
        points = stop_points(ctx.history)
        verdict = self.stop_rule(points, stop_context(cfg, ctx.num_classes))
        info = {"stop_rule": cfg.stop.rule, "fit": verdict.fit.to_dict() if verdict.fit is not None else None,
                "posterior": verdict.posterior, "fit_status": verdict.reason}
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
