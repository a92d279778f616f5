"""Stop: decide when growth stops (docs/method.md, "Stop", says which rule is which and why).

``STOP_RULES`` (``rules``) holds the ``--stop`` rules, built from ``saturation``, ``posterior`` and ``plateau``;
``sequence`` runs them, then the density and phase caps, after each phase.
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
