"""pwmpr's plateau rule (not in the paper): stop when doubling the density no longer buys accuracy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pwmpr.stop.decision import Observation, StopDecision, observation


def plateau_gain(densities: Sequence[float], accuracies: Sequence[float]) -> tuple[float, float]:
    """``(gain per doubling of density, its s.e.)`` by least squares on log2(density); (nan, nan) below 3 densities."""
    x = np.log2(np.asarray(densities, dtype=np.float64))
    y = np.asarray(accuracies, dtype=np.float64)
    if x.size < 3 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return float("nan"), float("nan")
    xc = x - x.mean()
    sxx = float(np.sum(xc**2))
    if sxx <= 0:
        return float("nan"), float("nan")
    slope = float(np.sum(xc * (y - y.mean())) / sxx)
    resid = y - y.mean() - slope * xc
    se = float(np.sqrt(np.sum(resid**2) / (x.size - 2) / sxx))
    return slope, se


def resolvable_span(n: int | None, tol: float, alpha: float | None) -> float:
    """The fewest doublings of density over which a gain of ``tol`` per doubling amounts to ln(1/alpha) of ``n``
    validation samples: the span a flat window needs before it is evidence of a plateau at level ``alpha``
    (docs/method.md, "plateau"). 0 when ``n`` or ``alpha`` is unknown or ``tol`` is not positive."""
    if not n or n < 1 or alpha is None or not tol > 0:
        return 0.0
    return math.log(1.0 / alpha) / (n * tol)


def window_fits(min_span: float, start: float, cap: float) -> bool:
    """Whether a window spanning ``min_span`` doublings of density fits between density ``start`` and ``cap``."""
    return start > 0 and cap > 0 and min_span <= math.log2(cap / start) + 1e-12


def doublings(lo: float, hi: float) -> float:
    """Doublings of density from ``lo`` to ``hi`` (0 where a density is not positive)."""
    return math.log2(hi / lo) if lo > 0 and hi > 0 else 0.0


def span(points: Sequence[Observation]) -> float:
    """Doublings of density from the first to the last of ``points`` (0 where a density is not positive)."""
    return doublings(points[0].density, points[-1].density)


def plateau_window(points: Sequence[Observation], window: int, min_span: float = 0.0) -> list[Observation] | None:
    """The points the plateau test reads after the last of ``points``: the last ``window``, widened back one point
    at a time until they span ``min_span`` doublings of density; None when the points so far cannot."""
    if len(points) < window:
        return None
    if not min_span > 0:  # nothing asked of the span: the last points, whatever densities they hold
        return list(points[-window:])
    for start in range(len(points) - window, -1, -1):
        chosen = list(points[start:])
        if span(chosen) >= min_span - 1e-12:
            return chosen
    return None


def plateau_reached(
    history: Any, *, tol: float = 0.01, window: int = 5, consecutive: int = 2, alpha: float | None = None
) -> StopDecision:
    """Stop when, over the last ``window`` points, the gain per doubling of density (+1 s.e.) is below ``tol``.

    ``tol`` is in accuracy units; it must hold in ``consecutive`` refits; ``tol <= 0`` disables it. With
    ``alpha``, each window is widened to span ``resolvable_span`` of the latest point's validation size. Never
    raises.
    """
    try:
        points = [observation(e) for e in history]
    except (TypeError, ValueError, KeyError, IndexError, OverflowError):
        return StopDecision(stop=False, reason="plateau rule: unreadable history")
    n = len(points)
    if tol <= 0:
        return StopDecision(stop=False, reason="plateau rule disabled", n_points=n)
    if n < window + consecutive - 1:
        return StopDecision(stop=False, reason=f"plateau rule needs {window + consecutive - 1} points", n_points=n)
    need = resolvable_span(points[-1].n, tol, alpha)
    bounds, widths = [], []
    for k in range(n, n - consecutive, -1):
        last = plateau_window(points[:k], window, need)
        if last is None:
            why = (f"{points[-1].n} validation samples resolve a gain of {tol:g} per doubling only over "
                   f"{need:.3g} doublings of density; the points up to the refit on {k} span {span(points[:k]):.3g}")
            return StopDecision(stop=False, reason=why, n_points=n)
        slope, se = plateau_gain([p.density for p in last], [p.accuracy for p in last])
        bound = slope + se
        if not bound < tol:  # also False for nan
            why = f"gain per doubling {slope:.4g} +/- {se:.3g} over the last {len(last)} points is not below {tol:g}"
            return StopDecision(stop=False, reason=why, n_points=n)
        bounds.append(bound)
        widths.append(len(last))
    wide = f" ({need:.3g} doublings of density: what {points[-1].n} validation samples resolve)" if need > 0 else ""
    why = (f"plateau: gain per doubling of density (+1 s.e.) {bounds[0]:.4g} < {tol:g} over the last "
           f"{widths[0]} points{wide} in {consecutive} consecutive refits")
    return StopDecision(stop=True, reason=why, n_points=n, kind="plateau")
