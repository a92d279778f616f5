"""The paper's stop rule: fit ``P(rho) = P0 + A (1 - exp(-beta rho))``, stop at 95% of its rise (docs/method.md, Stop).

``rho* = ln(20) / beta``; growth stops once the density is >= rho* in 2 consecutive refits of >= 4 points each.
``fit_saturation`` gives None (no fit) or a ``SaturationFit`` whose ``identifiable`` says whether rho* may be used;
``bounds=(chance, 1)`` is the ``paper`` rule, no bounds the ``paper-unbounded`` one (docs/method.md, "paper").
``should_stop`` raises only on a bug: anything it cannot use means "keep growing", with the reason.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pwmpr.errors import PwmprError
from pwmpr.stop.decision import Observation, StopDecision, decide_or_keep_growing, json_float, observation

log = logging.getLogger(__name__)

FIT_FAMILY = "saturating-exp"  # P0 + A (1 - exp(-beta rho)); named in to_dict so logs say which curve was fitted
LN20 = math.log(20.0)  # rho* = ln(20)/beta: A (1 - exp(-beta rho*)) = 0.95 A
MIN_FIT_POINTS = 3  # three parameters
DEFAULT_MAX_REL_STDERR = 0.5  # beta less than 2 standard errors from 0: its size (so rho*) is not determined
# beta * max(rho) below this: the curve is a straight line over the data (1 - e^-x ~ x with 0.05% error).
_LINEAR_REGIME = 1e-3
# Upper bounds in scaled units (densities / max density, accuracies / their range). A rise 10^4 times the observed
# spread is "no plateau in sight"; the bound lets a straight line converge (to A at the bound, beta -> 0) instead
# of running A to infinity until the optimiser gives up.
_A_MAX, _BETA_MAX = 1e4, 1e4
_BETA_GRID = np.logspace(-4, 4, 161)  # scaled beta = beta * max density; 20 points a decade
# Jacobian singular values below this fraction of the largest: a parameter direction the points do not constrain
# (e.g. A = 0 leaves beta free). curve_fit's pseudo-inverse reports such a direction with variance 0, not inf.
_RANK_TOL = 1e-9
_PARAMS = ("p0", "a", "beta")


@dataclass(frozen=True)
class SaturationFit:
    """A fit of ``P(rho) = P0 + A (1 - exp(-beta rho))`` to (density, accuracy) points.

    Attributes:
        p0: accuracy extrapolated to density 0 (units of the accuracies given).
        a: the rise ``A >= 0``; the plateau is ``p_inf = p0 + a``.
        beta: the rate (per unit density), > 0.
        stderr: one standard error of each parameter, ``{"p0", "a", "beta"}`` (inf where not estimable).
        r2: coefficient of determination (NaN when all accuracies are equal).
        identifiable: False when the plateau is not determined by the data ("no estimate yet"); ``reason`` says why.
    """

    p0: float
    a: float
    beta: float
    stderr: dict[str, float] = field(default_factory=dict)
    r2: float = float("nan")
    n_points: int = 0
    identifiable: bool = True
    reason: str = ""

    @property
    def rho_star(self) -> float:
        """``ln(20) / beta``: the density at 95% of the rise (inf when beta is 0)."""
        return LN20 / self.beta if self.beta > 0 else math.inf

    @property
    def p_inf(self) -> float:
        """The plateau ``p0 + a``."""
        return self.p0 + self.a

    def predict(self, rho: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
        """``P(rho)``: a float for a scalar density, an array for an array of densities."""
        r = np.asarray(rho, dtype=np.float64)
        p = self.p0 + self.a * -np.expm1(-self.beta * r)
        return float(p) if p.ndim == 0 else p

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (non-finite numbers become None), for history.jsonl and summary.json."""
        return {
            "family": FIT_FAMILY,
            "p0": json_float(self.p0),
            "a": json_float(self.a),
            "beta": json_float(self.beta),
            "stderr": {k: json_float(self.stderr.get(k, math.inf)) for k in _PARAMS},
            "r2": json_float(self.r2),
            "rho_star": json_float(self.rho_star),
            "p_inf": json_float(self.p_inf),
            "n_points": self.n_points,
            "identifiable": self.identifiable,
            "reason": self.reason,
        }


def _curve(x: np.ndarray, p0: float, a: float, beta: float) -> np.ndarray:
    return p0 + a * -np.expm1(-beta * x)


def _box_ls(g: np.ndarray, v: np.ndarray, p_lo: float, p_hi: float, a_lo: float, a_hi: float):
    """Per row of ``g``: exact ``(p0, a, sse)`` of min ||v - p0 - a g||^2, p0 in [p_lo, p_hi], a in [a_lo, a_hi]."""
    g_mean = g.mean(axis=1)
    gc, vc = g - g_mean[:, None], v - v.mean()
    sgg, sgv = (gc * gc).sum(axis=1), (gc * vc).sum(axis=1)
    gg = (g * g).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_free = np.where(sgg > 0, sgv / sgg, 0.0)
    cands = [(v.mean() - a_free * g_mean, a_free)]
    for a_fix in (a_lo, a_hi):  # a on an edge, best p0 clipped
        a = np.full_like(g_mean, a_fix)
        cands.append((np.clip(v.mean() - a * g_mean, p_lo, p_hi), a))
    for p_fix in (p_lo, p_hi):  # p0 on an edge, best a clipped
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(gg > 0, (g * (v[None, :] - p_fix)).sum(axis=1) / gg, 0.0)
        cands.append((np.full_like(g_mean, p_fix), np.clip(a, a_lo, a_hi)))
    best_p, best_a, best_sse = None, None, None
    for p0, a in cands:
        feasible = (p0 >= p_lo - 1e-12) & (p0 <= p_hi + 1e-12) & (a >= a_lo - 1e-12) & (a <= a_hi + 1e-12)
        sse = ((v[None, :] - p0[:, None] - a[:, None] * g) ** 2).sum(axis=1)
        sse = np.where(feasible, sse, np.inf)
        if best_sse is None:
            best_p, best_a, best_sse = p0.copy(), a.copy(), sse
        else:
            better = sse < best_sse
            best_p, best_a, best_sse = (np.where(better, p0, best_p), np.where(better, a, best_a),
                                        np.where(better, sse, best_sse))
    return best_p, best_a, best_sse


def _profile(u: np.ndarray, v: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Best ``[p0, A, beta]`` over a log grid of beta (linear least squares in p0, A >= 0 at each): a start."""
    g = -np.expm1(-np.outer(_BETA_GRID, u))  # (n_grid, n_points)
    p0, a, sse = _box_ls(g, v, *box)  # A >= 0: a falling fit becomes flat
    i = int(np.argmin(sse))
    return np.array([p0[i], a[i], _BETA_GRID[i]])


def _fit_scaled(u: np.ndarray, v: np.ndarray, box: tuple[float, float, float, float]
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Least-squares fit on data scaled to max(u) = 1 and a v span of 1: (params, covariance) or None.

    Starts from the profile optimum; one in the linear regime or with A = 0 is returned with an infinite covariance.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    profile = _profile(u, v, box)
    if profile[2] < _LINEAR_REGIME or profile[1] <= 0:
        return profile, np.full((3, 3), np.inf)
    rise = max(v[-1] - v[0], float(v.max() - v.min()))
    starts = [profile, (v[0], 1.5 * rise, 1.0 / float(np.median(u))), (v[0], rise, 3.0)]
    lower, upper = np.array([box[0], box[2], 0.0]), np.array([box[1], box[3], _BETA_MAX])
    span = upper - lower
    best = None
    for start in starts:
        # Strictly inside the bounds, as the trust-region solver requires.
        inset = np.where(np.isfinite(span), 1e-6 * span, 1e-6)
        x0 = np.clip(np.asarray(start, dtype=np.float64), lower + inset + [0, 1e-6, 1e-6],
                     np.minimum(upper - inset, [np.inf, _A_MAX / 2, _BETA_MAX / 2]))
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, pcov = curve_fit(_curve, u, v, p0=x0, bounds=(lower, upper), maxfev=2000)
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            continue
        if not np.all(np.isfinite(popt)):
            continue
        sse = float(np.sum((_curve(u, *popt) - v) ** 2))
        if best is None or sse < best[0] * (1.0 - 1e-9):
            best = (sse, popt, pcov)
        if start is profile:
            break  # converged from the (near-)global optimum: the other starts cannot do better
    return None if best is None else (best[1], best[2])


def fit_saturation(
    densities: Sequence[float] | np.ndarray,
    accuracies: Sequence[float] | np.ndarray,
    *,
    max_rel_stderr: float = DEFAULT_MAX_REL_STDERR,
    bounds: tuple[float, float] | None = None,
    noise: float | Sequence[float] | np.ndarray | None = None,
) -> SaturationFit | None:
    """Fit ``P(rho) = P0 + A (1 - exp(-beta rho))`` (``A >= 0``, ``beta > 0``) with ``scipy.optimize.curve_fit``.

    Args:
        densities: fractions of prunable weights kept, >= 0.
        accuracies: the accuracies at those densities (any unit: fraction or percent).
        max_rel_stderr: a fit whose beta has a standard error above ``max_rel_stderr * beta`` is not identifiable.
        bounds: ``(low, high)`` an accuracy can take, e.g. ``(1 / classes, 1)``; None: the unbounded fit.
        noise: standard error of each accuracy (a number or one per point; None: 0).

    Returns:
        A ``SaturationFit`` in the original units (check ``identifiable`` before using ``rho_star``), or None when
        no fit could be made (fewer than 3 points, a non-finite value, a negative density, all densities equal).

    Raises:
        PwmprError: ``densities`` and ``accuracies`` are not 1-D number sequences of the same length.
    """
    try:
        x = np.asarray(densities, dtype=np.float64)
        y = np.asarray(accuracies, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PwmprError(f"densities and accuracies must be sequences of numbers: {exc}") from None
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise PwmprError(
            f"densities and accuracies must be 1-D and of the same length, got shapes {x.shape} and {y.shape}"
        )
    n = x.size
    if n < MIN_FIT_POINTS or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.any(x < 0):
        return None
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    x_scale = float(x.max())
    if x_scale <= 0 or float(x.min()) == x_scale:
        return None  # no spread in density: nothing to fit a rate to
    y_centre = float(y.mean())
    y_scale = float(y.max() - y.min()) or 1.0
    u, v = x / x_scale, (y - y_centre) / y_scale
    if bounds is None:
        box = (-np.inf, np.inf, 0.0, _A_MAX)
    else:
        lo, hi = (float(b) for b in bounds)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise PwmprError(f"bounds must be two finite numbers low < high, got {bounds!r}")
        box = ((lo - y_centre) / y_scale, (hi - y_centre) / y_scale, 0.0, (hi - lo) / y_scale)
    sigma = np.zeros(n) if noise is None else np.broadcast_to(np.asarray(noise, dtype=np.float64), (n,))[order]

    result = _fit_scaled(u, v, box)
    if result is None:
        return None
    (p0_s, a_s, b_s), pcov = result

    # Back to the original units: P0 = c + s p0', A = s a', beta = b'/xs; the covariance scales alike.
    p0, a, beta = y_centre + y_scale * p0_s, y_scale * a_s, b_s / x_scale
    with np.errstate(invalid="ignore"):
        diag = np.diag(pcov) if np.all(np.isfinite(pcov)) else np.full(3, np.inf)
        se_s = np.sqrt(np.where(diag >= 0, diag, np.inf))
    stderr = {"p0": float(y_scale * se_s[0]), "a": float(y_scale * se_s[1]), "beta": float(se_s[2] / x_scale)}
    residual = float(np.sum((_curve(x, p0, a, beta) - y) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else float("nan")

    # Identifiability (with only the linear regime the plateau is not determined).
    jac = np.stack([np.ones_like(u), -np.expm1(-b_s * u), a_s * u * np.exp(-b_s * u)], axis=1)
    sv = np.linalg.svd(jac, compute_uv=False)
    reason = ""
    if not a_s > 1e-9:
        reason = "no rise: accuracy does not increase with density over these points"
    elif b_s < _LINEAR_REGIME:
        reason = f"beta -> 0 (beta * max density = {b_s:.2g}): only the linear regime was observed"
    elif bounds is None and a_s >= 0.999 * _A_MAX:
        reason = "A ran to its bound: the plateau height is not determined by the points"
    elif not np.all(np.isfinite(pcov)):
        reason = "covariance not finite: the parameters are not determined by the points"
    elif not sv[-1] > _RANK_TOL * sv[0]:
        reason = "no rise (A ~ 0) or a degenerate curve: beta is not determined by the points"
    elif not stderr["a"] < a:
        reason = f"A = {a:.4g} +/- {stderr['a']:.3g}: the plateau height is not determined by the points"
    elif not stderr["beta"] <= max_rel_stderr * beta:
        reason = f"beta = {beta:.4g} +/- {stderr['beta']:.3g}: standard error above {max_rel_stderr:g} x beta"
    elif bounds is not None:
        reason = _implausible(x, y, sigma, p0 + a, LN20 / beta, bounds[1])
    return SaturationFit(
        p0=float(p0),
        a=float(a),
        beta=float(beta),
        stderr=stderr,
        r2=float(r2),
        n_points=int(n),
        identifiable=not reason,
        reason=reason,
    )


def _implausible(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, p_inf: float, rho_star: float,
                 high: float) -> str:
    """Why a bounded fit's claims contradict the points ("" when they don't)."""
    best = int(np.argmax(y))
    if p_inf > high + 2.0 * float(sigma.max()):
        return f"plateau {p_inf:.4g} above the highest possible accuracy {high:g}: no saturation in sight"
    if p_inf < y[best] - 2.0 * sigma[best]:
        return (f"plateau {p_inf:.4g} below the best observed accuracy {y[best]:.4g} by more than 2 standard "
                "errors of the validation noise")
    if rho_star < float(x.min()):
        return f"rho* {rho_star:.4g} below every observed density (from {x.min():.4g}): not a saturation estimate"
    return ""


def should_stop(
    history: Any,
    *,
    min_points: int = 4,
    consecutive: int = 2,
    max_rel_stderr: float = DEFAULT_MAX_REL_STDERR,
    bounds: tuple[float, float] | None = None,
) -> StopDecision:
    """docs/method.md, "Stop": stop when the current density is >= rho* in ``consecutive`` refits in a row.

    Args:
        history: ``(density, accuracy[, n])`` tuples, mappings with those keys or ``Observation``s, oldest first.
        min_points: points a refit needs (4 in the paper rule); with ``consecutive=2`` the earliest stop is at 5.
        consecutive: refits in a row that must meet the criterion (2).
        bounds: passed to ``fit_saturation`` with the binomial noise of each point (where ``n`` is known).

    Returns:
        A ``StopDecision``; anything unusable gives ``stop=False`` with the reason (numerical errors in ``failed``).
    """
    return decide_or_keep_growing(lambda: _should_stop(history, min_points, consecutive, max_rel_stderr, bounds),
                                  "the saturation fit")


def _should_stop(history: Any, min_points: int, consecutive: int, max_rel_stderr: float,
                 bounds: tuple[float, float] | None) -> StopDecision:
    # Read the points; anything unreadable means keep growing.
    try:
        entries = list(history)
    except TypeError:
        return StopDecision(stop=False, reason=f"history is not a sequence ({type(history).__name__}); keep growing")
    points: list[Observation] = []
    for i, entry in enumerate(entries):
        try:
            points.append(observation(entry))
        except (TypeError, ValueError, KeyError, IndexError, OverflowError):
            return StopDecision(stop=False, reason=f"history entry {i} is not a (density, accuracy) pair: {entry!r}")
    n = len(points)
    min_points, consecutive = max(int(min_points), MIN_FIT_POINTS), max(int(consecutive), 1)
    if not all(math.isfinite(p.density) and math.isfinite(p.accuracy) for p in points):
        why = "history holds a non-finite density or accuracy; keep growing"
        return StopDecision(stop=False, reason=why, n_points=n)

    # Refit on each of the last `consecutive` prefixes, newest first; the decision carries the newest fit.
    latest = _fit_prefix(points, n, max_rel_stderr, bounds) if n >= MIN_FIT_POINTS else None  # logged even when too few
    for met, k in enumerate(range(n, n - consecutive, -1)):
        if k < min_points:
            why = f"need {min_points + consecutive - 1} points to stop, have {n}"
            return StopDecision(stop=False, reason=why, fit=latest, n_points=n)
        fit = latest if k == n else _fit_prefix(points, k, max_rel_stderr, bounds)
        if fit is None:
            return StopDecision(stop=False, reason=f"no fit on {k} points; keep growing", fit=latest, n_points=n)
        if not fit.identifiable:
            return StopDecision(stop=False, reason=f"no estimate on {k} points: {fit.reason}", fit=latest, n_points=n)
        density = points[k - 1].density  # the current density when that refit was made
        if not density >= fit.rho_star:
            why = f"density {density:.4g} < rho* {fit.rho_star:.4g} on {k} points"
            if met:
                why += f" (criterion met on the {met} newer refit(s) only)"
            return StopDecision(stop=False, reason=why, fit=latest, n_points=n)
    return StopDecision(
        stop=True,
        reason=f"density {points[-1].density:.4g} >= rho* {latest.rho_star:.4g} in {consecutive} consecutive refits",
        fit=latest,
        n_points=n,
    )


def _fit_prefix(points: list[Observation], k: int, max_rel_stderr: float,
                bounds: tuple[float, float] | None) -> SaturationFit | None:
    """The fit on the first ``k`` points: the refit made after phase ``k``."""
    pts = points[:k]
    noise = [p.stderr or 0.0 for p in pts]
    return fit_saturation([p.density for p in pts], [p.accuracy for p in pts], max_rel_stderr=max_rel_stderr,
                          bounds=bounds, noise=noise)
