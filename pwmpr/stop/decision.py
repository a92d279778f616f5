"""What a stop rule returns, and the points it reads: shared by every rule in ``pwmpr.stop``."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pwmpr.errors import PwmprError

log = logging.getLogger(__name__)

# The numerical errors a fit may raise on points it cannot use (ArithmeticError: division by zero, overflow,
# floating-point errors; ValueError: a math domain error, numpy.linalg.LinAlgError, statistics.StatisticsError).
# A stop rule turns these into "keep growing" with the failure recorded; anything else is a bug and propagates.
FIT_ERRORS: tuple[type[Exception], ...] = (ArithmeticError, ValueError)


def fit_failure(exc: Exception) -> str:
    """The one-line record of a fit's numerical failure: ``"LinAlgError: ..."``."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def json_float(x: float | None) -> float | None:
    """``x``, or None where JSON has no number (None, NaN, inf)."""
    return float(x) if x is not None and math.isfinite(x) else None


def growth_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history rows of the phases that a stop rule reads: every ``phase`` row but those of the shrink stage
    (which carry a ``shrink`` entry) and the final training."""
    return [r for r in history if r.get("stage") == "phase" and "shrink" not in r]


def shrink_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history rows of the shrink stage's phases (its candidates, and the network gone back to)."""
    return [r for r in history if r.get("stage") == "phase" and "shrink" in r]


@dataclass(frozen=True)
class Observation:
    """One point of the accuracy-density curve.

    Attributes:
        density: fraction of prunable weights present.
        accuracy: validation accuracy, a fraction in [0, 1] (or any unit for the plain fit).
        n: validation samples behind ``accuracy`` (None: unknown).
    """

    density: float
    accuracy: float
    n: int | None = None

    @property
    def stderr(self) -> float | None:
        """Binomial standard error of ``accuracy``, clipped to [1/(2n), 1 - 1/(2n)] (None when ``n`` is unknown)."""
        if not self.n or self.n < 1:
            return None
        p = min(max(self.accuracy, 0.5 / self.n), 1.0 - 0.5 / self.n)
        return math.sqrt(p * (1.0 - p) / self.n)


def chance_margin(point: Observation, chance: float, alpha: float) -> float:
    """How far above chance a point's accuracy must be to be told from guessing: one-sided at level ``alpha``, the
    binomial standard error of chance on the point's validation size (docs/method.md, "Stop": a curve at chance is
    no plateau); 0 when the size or chance is unknown."""
    if not point.n or not chance > 0 or not 0 < alpha < 1:
        return 0.0
    from statistics import NormalDist

    return NormalDist().inv_cdf(1.0 - alpha) * math.sqrt(chance * (1.0 - chance) / point.n)


def above_chance(point: Observation, chance: float, alpha: float) -> bool:
    """Whether the network of ``point`` does better than guessing among 1 / ``chance`` classes, beyond noise."""
    return not chance > 0 or point.accuracy > chance + chance_margin(point, chance, alpha)


def observation(entry: Any) -> Observation:
    """An Observation from a pair, a triple or a mapping with "density" and "accuracy" (and optional "n");
    raises TypeError, ValueError, KeyError or IndexError on anything else."""
    if isinstance(entry, Observation):
        return entry
    if isinstance(entry, Mapping):
        d, acc, n = entry["density"], entry["accuracy"], entry.get("n")
    elif isinstance(entry, (str, bytes)):
        raise TypeError("a string is not a (density, accuracy) pair")
    else:
        d, acc = entry[0], entry[1]
        n = entry[2] if len(entry) > 2 else None
    return Observation(float(d), float(acc), int(n) if n is not None else None)


@dataclass(frozen=True)
class StopDecision:
    """What a stop rule decided, for the method to act on and the run to log.

    Attributes:
        fit: the saturation fit on the whole history (paper rules; None otherwise or when none could be made).
        posterior: the gain rule's ``CurvePosterior.summary()``, None for other rules.
        tol: the gain tolerance the gain rule decided at; None for other rules.
        failed: the fit's numerical failure (``fit_failure``) when it raised one of ``FIT_ERRORS``.
        kind: the run's stop reason when ``stop`` is True: ``saturated`` (a curve rule) or ``plateau``.
    """

    stop: bool
    reason: str
    fit: Any = None
    n_points: int = 0
    posterior: dict[str, Any] | None = field(default=None, compare=False)
    tol: float | None = None
    failed: str | None = None
    kind: str = "saturated"

    @property
    def rho_star(self) -> float | None:
        """The latest identifiable rho* estimate of a saturation fit, or None."""
        return self.fit.rho_star if self.fit is not None and self.fit.identifiable else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "stop": self.stop,
            "reason": self.reason,
            "n_points": self.n_points,
            "rho_star": json_float(self.rho_star),
            "fit": self.fit.to_dict() if self.fit is not None else None,
            "posterior": self.posterior,
            "tol": json_float(self.tol),
            "failed": self.failed,
        }


def decide_or_keep_growing(decide: Callable[[], StopDecision], what: str, **extra: Any) -> StopDecision:
    """``decide()``, or "keep growing" with the failure recorded when the fit ``what`` raised one of ``FIT_ERRORS``."""
    try:
        return decide()
    except FIT_ERRORS as exc:
        if isinstance(exc, PwmprError):
            raise
        failed = fit_failure(exc)
        log.warning("%s failed (%s); growth continues", what, failed)
        log.debug("the failed fit's traceback", exc_info=True)
        return StopDecision(stop=False, reason=f"{what} failed ({failed}); keep growing", failed=failed, **extra)
