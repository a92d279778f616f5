"""Step 5 of the pipeline (seed -> train -> score -> grow -> stop -> export): decide when growth stops.

``STOP_RULES`` (``pwmpr.stop.rules``) holds the rules a run can pick with ``--stop``; the saturation fit of the
paper (``saturation``), the curve posterior of the gain rule (``posterior``) and the plateau test (``plateau``, the
default rule and the fallback) are the pieces they are made of; ``sequence`` runs them, then the density and phase
caps, after each phase. docs/method.md, "Stop", says which is which and why.
"""

from pwmpr.stop.decision import Observation, StopDecision, growth_rows, observation, shrink_rows
from pwmpr.stop.plateau import plateau_gain, plateau_reached
from pwmpr.stop.posterior import CurvePosterior, curve_posterior
from pwmpr.stop.rules import STOP_RULES, StopContext
from pwmpr.stop.saturation import LN20, SaturationFit, fit_saturation, should_stop
from pwmpr.stop.sequence import GrowthStop, growth_stop

__all__ = [
    "LN20", "STOP_RULES", "CurvePosterior", "GrowthStop", "Observation", "SaturationFit", "StopContext", "StopDecision",
    "curve_posterior", "fit_saturation", "growth_rows", "growth_stop", "observation", "plateau_gain", "plateau_reached",
    "should_stop", "shrink_rows",
]
