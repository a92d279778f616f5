"""The stop sequence after a growth phase: the chosen rule, the plateau fallback, then the density and phase caps.

What growth itself can still stop on (no edge left to grow, the cost guard) is decided by the method after it has
tried the step; docs/method.md, "Stop", lists the whole order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pwmpr.stop.decision import Observation, above_chance, chance_margin, growth_rows
from pwmpr.stop.plateau import plateau_gain, plateau_reached, plateau_window, resolvable_span
from pwmpr.stop.rules import STOP_RULES, StopContext, check_fit_failures


def observed(row: Mapping[str, Any]) -> Observation:
    """The curve point of one history row: its density, validation accuracy and validation size."""
    return Observation(row["density"], row["val_acc"], row.get("val_n"))


def stop_points(history: list[dict]) -> list[Observation]:
    """The points of the growth phases of a run's history (shrink-stage phases are not growth points)."""
    return [observed(r) for r in growth_rows(history)]


def stop_context(stop: Any, num_classes: int | None) -> StopContext:
    """The StopContext of a run's stop settings (``RunConfig.stop``)."""
    return StopContext(chance=1.0 / num_classes if num_classes else 0.0, cap=stop.max_density,
                       min_points=stop.min_points, consecutive=stop.consecutive, tol=stop.tol, alpha=stop.alpha,
                       plateau_tol=stop.plateau_tol, plateau_resolve=stop.plateau_resolve)


def plateau_line(points: list[Observation], tol: float, min_span: float = 0.0) -> dict[str, Any]:
    """The plateau test's line over ``points`` (for the history and curve.png): its gain per doubling, standard
    error and tolerance, the densities it spans and its centre (mean log2 density, mean accuracy), and the
    doublings of density its window must span (``min_span``)."""
    if not all(p.density > 0 for p in points):  # no log density to fit or centre the line on
        return {"slope": None, "se": None, "tol": tol, "from": points[0].density, "to": points[-1].density,
                "x0": None, "y0": None, "min_span": min_span, "points": len(points)}
    slope, se = plateau_gain([p.density for p in points], [p.accuracy for p in points])
    x0 = sum(math.log2(p.density) for p in points) / len(points)
    y0 = sum(p.accuracy for p in points) / len(points)
    finite = math.isfinite(slope) and math.isfinite(se)
    return {"slope": slope if finite else None, "se": se if finite else None, "tol": tol,
            "from": points[0].density, "to": points[-1].density, "x0": x0, "y0": y0, "min_span": min_span,
            "points": len(points)}


@dataclass(frozen=True)
class GrowthStop:
    """What the stop sequence decided: ``reason`` (None: keep growing) and the entries for the phase's row."""

    reason: str | None
    info: dict[str, Any] = field(default_factory=dict)


def growth_stop(history: list[dict], stop: Any, num_classes: int | None, density: float) -> GrowthStop:
    """Run the stop sequence on a run's history after a growth phase at ``density``."""
    points = stop_points(history)
    verdict = STOP_RULES.get(stop.rule)(points, stop_context(stop, num_classes))
    info: dict[str, Any] = {"stop_rule": stop.rule, "fit": verdict.fit.to_dict() if verdict.fit is not None else None,
                            "posterior": verdict.posterior, "fit_status": verdict.reason}
    if verdict.tol is not None:
        info["stop_tol_used"] = verdict.tol
    if verdict.failed is not None:  # recorded in the history row; repeated failures end the run
        info["stop_fit_failed"] = verdict.failed
        check_fit_failures(growth_rows(history)[:-1], verdict, stop.rule)
    window = stop.min_points + 1
    alpha = stop.alpha if stop.plateau_resolve else None
    if stop.plateau_tol > 0 and len(points) >= window:  # the plateau test's line, whichever rule decides
        need = resolvable_span(points[-1].n, stop.plateau_tol, alpha)
        line = plateau_window(points, window, need) or points[-window:]  # too short a span: the last points
        info["plateau_fit"] = plateau_line(line, stop.plateau_tol, need)
        # What the validation set resolves, whichever window is read (for the note a run says on a small set).
        info["plateau_fit"]["resolves_over"] = resolvable_span(points[-1].n, stop.plateau_tol, stop.alpha)
    majority = float(history[-1].get("val_majority") or 0.0) if history else 0.0
    if majority >= 1.0:  # one class in the whole validation set: every guess of it is right, chance tells nothing
        majority = 0.0
    chance = max(1.0 / num_classes if num_classes else 0.0, majority)  # guessing uniformly, or the commonest class
    learning = not stop.chance_guard or not points or above_chance(points[-1], chance, stop.alpha)
    # A curve at chance is a network that has not started to learn, not one that has saturated: a stop it would
    # take is recorded as held back (docs/method.md, "Stop").
    held = (f"validation accuracy {points[-1].accuracy:.4g} is not above chance {chance:.4g} by "
            f"{chance_margin(points[-1], chance, stop.alpha):.3g} (one-sided at --stop-alpha {stop.alpha:g}"
            + (f" on {points[-1].n} samples" if points[-1].n else "") + "): growth goes on") if not learning else ""
    if verdict.stop:
        if learning:
            if verdict.kind == "plateau":  # the rule was the plateau test: its reason is the plateau status
                info["plateau_status"] = verdict.reason
            return GrowthStop(verdict.kind, info)
        info["chance_status"] = f"{verdict.kind} held back: {held}"
    flat = plateau_reached(points, tol=stop.plateau_tol, window=window, consecutive=stop.consecutive, alpha=alpha)
    info["plateau_status"] = flat.reason
    if flat.stop:
        if learning:
            return GrowthStop("plateau", info)
        info["chance_status"] = f"plateau held back: {held}"
    if density >= stop.max_density - 1e-12:
        return GrowthStop("max-density", info)
    if len(points) >= stop.max_phases:
        return GrowthStop("max-phases", info)
    return GrowthStop(None, info)
