"""The linear |W| scoring network of PWMP, SynFlow and the tau-core (docs/method.md, Score and Operations).

:func:`linear_surrogate` deep-copies a model into float64 with every parameter made non-negative and each prunable
weight replaced by its effective value ``|W| * mask``. Its forward then runs under :class:`Linearizer`, a
:class:`pwmpr.graph.mode.WatchMode` that swaps every op computed from the input for a linear stand-in, whether a
module or a plain forward calls it: activations become the identity, norms a positive per-unit scale, max pooling
average pooling, additive constants (biases, embeddings, class tokens) zero, the product of two activations their
sum (a gate), and attention the uniform average over the positions a mask leaves visible. On an all-ones input every
value is then a sum of path products, so ``dR/dW_eff`` is the exact PWMP score. An op without a stand-in raises a
PwmprError naming the module, the op and why.

One module per job: ``net`` (making the scoring copy and running it: :func:`linear_surrogate`,
:func:`path_gradients`), ``linearizer`` (the mode that dispatches each op to its stand-in), and the stand-ins by op
family: ``standin_activations``, ``standin_contract`` (each use of a weight, ``q @ k^T``) and ``standin_attention``
(softmax, fused attention, and pwmp-attn's tangents); ``values`` holds what a tracked tensor is and the argument
helpers they share.
"""

from __future__ import annotations

from pwmpr.surrogate.linearizer import Linearizer
from pwmpr.surrogate.net import linear_surrogate, path_gradients, scoring_input, surrogate_forward
from pwmpr.surrogate.values import WeightHook

__all__ = ["Linearizer", "WeightHook", "linear_surrogate", "path_gradients", "scoring_input", "surrogate_forward"]
