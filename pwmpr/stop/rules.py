"""STOP_RULES: name -> rule deciding, after each growth phase, whether growth stops (docs/method.md, Stop).

Rules: ``gain``, ``paper``, ``paper-unbounded``, ``plateau`` and ``none`` (never stops). Points a rule cannot
use and numerical errors of its fit mean "keep growing" (the latter in ``StopDecision.failed``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

from pwmpr.errors import PwmprError
from pwmpr.registry import Registry
from pwmpr.stop.decision import Observation, StopDecision, decide_or_keep_growing
from pwmpr.stop.plateau import plateau_reached
from pwmpr.stop.posterior import curve_posterior
from pwmpr.stop.saturation import should_stop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StopContext:
    """What a stop rule needs besides the points.

    Attributes:
        chance: the accuracy of guessing (1 / classes).
        cap: the largest density growth may reach (``max_density``).
        tol: ``gain``: the accuracy gain (fraction: 0.01 is one point) below which growing on is not worth it.
        alpha: ``gain``: stop when that holds with probability at least ``1 - alpha``.
        plateau_tol: ``plateau``: the accuracy a doubling of density must still buy.
        plateau_resolve: ``plateau``: widen its window to what the validation set resolves at level ``alpha``.
    """

    chance: float = 0.0
    cap: float = 1.0
    min_points: int = 4
    consecutive: int = 2
    tol: float = 0.005
    alpha: float = 0.1
    plateau_tol: float = 0.005
    plateau_resolve: bool = False


MAX_FIT_FAILURES = 3  # growth phases in a row whose stop-rule fit failed before the run stops with an error


def check_fit_failures(earlier: Sequence[Mapping[str, Any]], decision: StopDecision, rule: str,
                       limit: int = MAX_FIT_FAILURES) -> None:
    """Raise a PwmprError when ``decision``'s fit failed and so did those of the last ``limit - 1`` growth rows
    before it (``earlier``, oldest first; a failed fit is recorded there as ``stop_fit_failed``)."""
    if decision.failed is None:
        return
    run = 1
    for row in reversed(earlier):
        if not row.get("stop_fit_failed"):
            break
        run += 1
    if run >= limit:
        raise PwmprError(f"the stop rule {rule!r} failed to fit in {run} phases in a row (last: {decision.failed}); "
                         f"rerun with another --stop rule")


StopRule = Callable[[Sequence[Observation], StopContext], StopDecision]
STOP_RULES: Registry[StopRule] = Registry("stop rule")


@STOP_RULES.register("gain")
def gain_rule(points: Sequence[Observation], ctx: StopContext) -> StopDecision:
    """Stop when Pr(gain from growing on < tol) >= 1 - alpha on each of the last ``consecutive`` refits."""
    return decide_or_keep_growing(lambda: _gain_rule(list(points), ctx), "gain rule's fit", n_points=len(points))


def resolvable_gain(points: Sequence[Observation], alpha: float, n_points: int = 4) -> float:
    """The smallest gain ``n_points`` validation accuracies resolve at level ``alpha``: ``z_(1-alpha) se/sqrt(n)``.

    ``se`` is the latest point's binomial standard error (0 when the validation size is unknown).
    """
    se = points[-1].stderr if points else None
    return NormalDist().inv_cdf(1.0 - alpha) * se / math.sqrt(max(n_points, 1)) if se else 0.0


def _gain_rule(points: list[Observation], ctx: StopContext) -> StopDecision:
    # A tolerance below what the points can resolve would wait forever for a confidence the data cannot give: the
    # rule decides at the smallest gain they resolve instead (docs/method.md, "gain").
    tol = max(ctx.tol, resolvable_gain(points, ctx.alpha, ctx.min_points))
    decision = _gain_decision(points, replace(ctx, tol=tol))
    return replace(decision, tol=tol)


def _gain_decision(points: list[Observation], ctx: StopContext) -> StopDecision:
    n = len(points)
    if not all(math.isfinite(p.density) and math.isfinite(p.accuracy) for p in points):
        return StopDecision(stop=False, reason="history holds a non-finite density or accuracy; keep growing",
                            n_points=n)
    need = max(ctx.min_points, 3) + max(ctx.consecutive, 1) - 1
    latest = curve_posterior(points, cap=ctx.cap, chance=ctx.chance) if n >= 3 else None
    summary = latest.summary(points[-1].density, ctx.tol) if latest is not None else None
    if n < need:
        return StopDecision(stop=False, reason=f"need {need} points to stop, have {n}", n_points=n, posterior=summary)
    probs = []
    for k in range(n, n - max(ctx.consecutive, 1), -1):
        post = latest if k == n else curve_posterior(points[:k], cap=ctx.cap, chance=ctx.chance)
        if post is None:
            return StopDecision(stop=False, reason=f"no posterior on {k} points; keep growing", n_points=n,
                                posterior=summary)
        p = post.prob_gain_below(points[k - 1].density, ctx.tol)
        probs.append(p)
        if p < 1.0 - ctx.alpha:
            why = (f"Pr(gain < {ctx.tol:g}) = {p:.3f} < {1 - ctx.alpha:g} on {k} points"
                   + (f" (met on the {len(probs) - 1} newer refit(s) only)" if len(probs) > 1 else ""))
            return StopDecision(stop=False, reason=why, n_points=n, posterior=summary)
    why = (f"Pr(gain to density {ctx.cap:g} < {ctx.tol:g}) = {probs[0]:.3f} >= {1 - ctx.alpha:g} in "
           f"{len(probs)} consecutive refit(s)")
    return StopDecision(stop=True, reason=why, n_points=n, posterior=summary)


@STOP_RULES.register("paper")
def paper_rule(points: Sequence[Observation], ctx: StopContext) -> StopDecision:
    """The paper's rule on a fit bounded to [chance, 1] and checked against the points' noise."""
    return should_stop(points, min_points=ctx.min_points, consecutive=ctx.consecutive, bounds=(ctx.chance, 1.0))


@STOP_RULES.register("paper-unbounded")
def paper_unbounded_rule(points: Sequence[Observation], ctx: StopContext) -> StopDecision:
    """The paper's rule with the unbounded fit (pwmpr's first default)."""
    return should_stop([(p.density, p.accuracy) for p in points], min_points=ctx.min_points,
                       consecutive=ctx.consecutive)


@STOP_RULES.register("plateau")
def plateau_rule(points: Sequence[Observation], ctx: StopContext) -> StopDecision:
    """Stop when the gain per doubling of density (+1 s.e.) over the last ``min_points + 1`` points (or more, to
    span what the validation set resolves) is below ``plateau_tol`` in ``consecutive`` refits."""
    return plateau_reached(points, tol=ctx.plateau_tol, window=ctx.min_points + 1, consecutive=ctx.consecutive,
                           alpha=ctx.alpha if ctx.plateau_resolve else None)


@STOP_RULES.register("none")
def never(points: Sequence[Observation], ctx: StopContext) -> StopDecision:
    """Never stops: growth runs to max_density or max_phases."""
    return StopDecision(stop=False, reason="stop rule 'none': grow to max density or max phases", n_points=len(points))
