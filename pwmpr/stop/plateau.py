"""pwmpr's plateau rule (not in the paper): stop when doubling the density no longer buys accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pwmpr.stop.decision import StopDecision, observation


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


def plateau_reached(
    history: Any, *, tol: float = 0.01, window: int = 5, consecutive: int = 2
) -> StopDecision:
    """Stop when, over the last ``window`` points, the gain per doubling of density (+1 s.e.) is below ``tol``.

    ``tol`` is in accuracy units; it must hold in ``consecutive`` refits; ``tol <= 0`` disables it. Never raises.
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
    bounds = []
    for k in range(n, n - consecutive, -1):
        last = points[k - window:k]
        slope, se = plateau_gain([p.density for p in last], [p.accuracy for p in last])
        bound = slope + se
        if not bound < tol:  # also False for nan
            why = f"gain per doubling {slope:.4g} +/- {se:.3g} over the last {window} points is not below {tol:g}"
            return StopDecision(stop=False, reason=why, n_points=n)
        bounds.append(bound)
    why = (f"plateau: gain per doubling of density (+1 s.e.) {bounds[0]:.4g} < {tol:g} over the last {window} "
           f"points in {consecutive} consecutive refits")
    return StopDecision(stop=True, reason=why, n_points=n, kind="plateau")
