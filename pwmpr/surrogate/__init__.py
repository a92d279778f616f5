"""The linear |W| scoring network of PWMP, SynFlow and the tau-core (docs/method.md, Score and Operations).

:func:`linear_surrogate` copies a model into float64 with ``|W| * mask`` weights, and its forward runs every op
through a linear stand-in, so ``dR/dW_eff`` on an all-ones input is the exact PWMP score. An op without a stand-in
raises a PwmprError naming the module, the op and why.
"""

from __future__ import annotations

from pwmpr.surrogate.linearizer import Linearizer
from pwmpr.surrogate.net import linear_surrogate, path_gradients, scoring_input, surrogate_forward
from pwmpr.surrogate.values import WeightHook

__all__ = ["Linearizer", "WeightHook", "linear_surrogate", "path_gradients", "scoring_input", "surrogate_forward"]
